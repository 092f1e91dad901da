"""Failed logins counted in the index, per account name and per address, so that guessing passwords is slow.

After ``Limit.failures`` failures within ``Limit.window``, logins to that
account name, or from that address, are refused for ``Limit.first_lock``;
each lockout in a row lasts twice as long as the one before, up to
``Limit.longest_lock``. Names count whether an account has them or not, so
a lockout tells nothing about which accounts exist. The counters live in the
index: every gateway process sharing it sees the same ones. Keys are SHA-256
digests of what they count, so no typed user name is kept in clear.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass

from sqlalchemy import Engine, and_, case, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from storage.index.schema import login_throttle
from storage.index.times import as_utc, utc_now


@dataclass(frozen=True)
class Limit:
    failures: int  # failures within the window that lock
    window: dt.timedelta
    first_lock: dt.timedelta
    longest_lock: dt.timedelta


ACCOUNT_LIMIT = Limit(5, dt.timedelta(minutes=15), dt.timedelta(minutes=1), dt.timedelta(hours=1))
# Higher: behind a proxy or a NAT many people share an address.
ADDRESS_LIMIT = Limit(20, dt.timedelta(minutes=15), dt.timedelta(minutes=1), dt.timedelta(hours=1))
FORGET_AFTER = dt.timedelta(hours=24)  # a key without failures this long starts afresh


@dataclass(frozen=True)
class Lockout:
    scope: str  # "account" or "address"
    seconds: float  # until logins are heard again


def address_key(address: str) -> str:
    """What an address is counted as: itself for IPv4, its /64 for IPv6 (one host may hold a whole /64)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _digest(scope: str, value: str) -> str:
    return hashlib.sha256(f"{scope}\x00{value}".encode("utf-8")).hexdigest()


class LoginThrottle:
    """Counts failed logins and says when they lock an account name or an address (see the module)."""

    def __init__(self, engine: Engine, account: Limit = ACCOUNT_LIMIT, address: Limit = ADDRESS_LIMIT) -> None:
        self.engine = engine
        self.limits = {"account": account, "address": address}
        insert_ = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._insert = insert_(login_throttle)

    def _keys(self, username: str, address: str) -> dict[str, str]:
        return {"account": _digest("account", username), "address": _digest("address", address_key(address))}

    def locked(self, username: str, address: str, now: dt.datetime | None = None) -> Lockout | None:
        """The lockout that refuses this login now, if any (the longer one when both are locked)."""
        now = now or utc_now()
        keys = self._keys(username, address)
        t = login_throttle.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.key, t.locked_until).where(t.key.in_(keys.values()), t.locked_until > now)).all()
        scopes = {key: scope for scope, key in keys.items()}
        found = [Lockout(scopes[r.key], (as_utc(r.locked_until) - now).total_seconds()) for r in rows]
        return max(found, key=lambda lockout: lockout.seconds, default=None)

    def failed(self, username: str, address: str, now: dt.datetime | None = None) -> list[Lockout]:
        """Count a failed login; the lockouts it starts."""
        now = now or utc_now()
        t = login_throttle.c
        started = []
        with self.engine.begin() as conn:
            for scope, key in self._keys(username, address).items():
                limit = self.limits[scope]
                fresh = t.window_start < now - limit.window
                # One statement: concurrent failures (other processes) are all counted, none overwrites another.
                conn.execute(
                    self._insert.values(key=key, failures=1, window_start=now, last_failure=now, lockouts=0).on_conflict_do_update(
                        index_elements=["key"],
                        set_={
                            "failures": case((fresh, 1), else_=t.failures + 1),
                            "window_start": case((fresh, now), else_=t.window_start),
                            "lockouts": case((t.last_failure < now - FORGET_AFTER, 0), else_=t.lockouts),
                            "last_failure": now,
                        },
                    )
                )  # fmt: skip
                row = conn.execute(select(t.failures, t.lockouts).where(t.key == key)).one()
                if row.failures >= limit.failures:
                    seconds = min(limit.first_lock * 2 ** min(row.lockouts, 30), limit.longest_lock)
                    conn.execute(
                        update(login_throttle).where(t.key == key)
                        .values(locked_until=now + seconds, lockouts=t.lockouts + 1, failures=0, window_start=now)
                    )  # fmt: skip
                    started.append(Lockout(scope, seconds.total_seconds()))
            stale = and_(t.last_failure < now - FORGET_AFTER, or_(t.locked_until.is_(None), t.locked_until < now))
            conn.execute(delete(login_throttle).where(stale))
        return started

    def succeeded(self, username: str) -> None:
        """A login to the account succeeded: its failures are forgotten (not the address's)."""
        with self.engine.begin() as conn:
            conn.execute(delete(login_throttle).where(login_throttle.c.key == _digest("account", username)))
