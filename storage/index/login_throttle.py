"""Login attempts counted in the index, so that guessing passwords is slow and cannot be hurried by concurrency.

An attempt is counted *before* its password is checked, in one statement
per key that adds it and reads the count back: requests in flight at once
are all counted, so no more than ``Limit.failures`` passwords are ever
checked within ``Limit.window``, however many arrive together or however
many gateway processes share the index. A success gives its attempt back.

Three keys are counted for each attempt:

- **pair** (this account name from this address): 5 attempts in 15 minutes,
  then locked for a minute, each lockout in a row twice as long, up to an hour;
- **address** (any name from this address, an IPv6 /64 as one): 20, likewise;
- **account** (this name from anywhere): 30, locked at most 15 minutes, so
  that guessing from many addresses is slow too, while someone who knows an
  administrator's name cannot keep them out for long from elsewhere
  (``pacs-gateway user unlock NAME`` lifts every lock of a name at once).

While a key is locked, its logins are refused, the right password included,
and its attempts are not counted. Names count whether an account has them or
not, so a lockout tells nothing about which accounts exist. Keys are SHA-256
digests of what they count: no typed user name is kept in clear.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass

from sqlalchemy import Engine, and_, case, delete, or_, update
from sqlalchemy.dialects import postgresql, sqlite

from storage.index.schema import login_throttle
from storage.index.times import as_utc, utc_now


@dataclass(frozen=True)
class Limit:
    failures: int  # attempts within the window that may be checked; the next one locks
    window: dt.timedelta
    first_lock: dt.timedelta
    longest_lock: dt.timedelta


PAIR_LIMIT = Limit(5, dt.timedelta(minutes=15), dt.timedelta(minutes=1), dt.timedelta(hours=1))
# Higher: behind a proxy or a NAT many people share an address.
ADDRESS_LIMIT = Limit(20, dt.timedelta(minutes=15), dt.timedelta(minutes=1), dt.timedelta(hours=1))
ACCOUNT_LIMIT = Limit(30, dt.timedelta(minutes=15), dt.timedelta(minutes=1), dt.timedelta(minutes=15))
FORGET_AFTER = dt.timedelta(hours=24)  # a key without attempts this long starts afresh


@dataclass(frozen=True)
class Lockout:
    scope: str  # "pair", "address" or "account"
    seconds: float  # until logins are heard again


@dataclass(frozen=True)
class Attempt:
    """What counting one attempt found: the lockout refusing it (None: check its password), and lockouts it began."""

    refused: Lockout | None
    started: tuple[Lockout, ...]


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
    """Counts login attempts per name and address, and says which are refused (see the module)."""

    def __init__(
        self, engine: Engine, *, pair: Limit = PAIR_LIMIT, address: Limit = ADDRESS_LIMIT, account: Limit = ACCOUNT_LIMIT
    ) -> None:
        self.engine = engine
        self.limits = {"pair": pair, "address": address, "account": account}
        insert_ = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._insert = insert_(login_throttle)

    def _keys(self, username: str, address: str) -> dict[str, str]:
        where = address_key(address)
        return {
            "pair": _digest("pair", f"{username}\x00{where}"),
            "address": _digest("address", where),
            "account": _digest("account", username),
        }

    def attempt(self, username: str, address: str, now: dt.datetime | None = None) -> Attempt:
        """Count a login attempt before its password is checked (see the module)."""
        now = now or utc_now()
        t = login_throttle.c
        account = _digest("account", username)
        refused: list[Lockout] = []
        started: list[Lockout] = []
        with self.engine.begin() as conn:
            for scope, key in self._keys(username, address).items():
                limit = self.limits[scope]
                locked = and_(t.locked_until.is_not(None), t.locked_until > now)
                fresh = t.window_start < now - limit.window
                counted = (
                    self._insert.values(
                        key=key, account=account if scope != "address" else "", failures=1, window_start=now,
                        last_failure=now, lockouts=0,
                    )
                    .on_conflict_do_update(
                        index_elements=["key"],
                        set_={
                            "failures": case((locked, t.failures), (fresh, 1), else_=t.failures + 1),
                            "window_start": case((locked, t.window_start), (fresh, now), else_=t.window_start),
                            "lockouts": case((t.last_failure < now - FORGET_AFTER, 0), else_=t.lockouts),
                            "last_failure": now,
                        },
                    )
                    .returning(t.failures, t.lockouts, t.locked_until)
                )  # fmt: skip
                row = conn.execute(counted).one()
                until = as_utc(row.locked_until) if row.locked_until is not None else None
                if until is not None and until > now:
                    refused.append(Lockout(scope, (until - now).total_seconds()))
                elif row.failures > limit.failures:
                    seconds = min(limit.first_lock * 2 ** min(row.lockouts, 30), limit.longest_lock)
                    conn.execute(
                        update(login_throttle).where(t.key == key)
                        .values(locked_until=now + seconds, lockouts=t.lockouts + 1, failures=0, window_start=now)
                    )  # fmt: skip
                    lock = Lockout(scope, seconds.total_seconds())
                    started.append(lock)
                    refused.append(lock)
            stale = and_(t.last_failure < now - FORGET_AFTER, or_(t.locked_until.is_(None), t.locked_until < now))
            conn.execute(delete(login_throttle).where(stale))
        return Attempt(max(refused, key=lambda lock: lock.seconds, default=None), tuple(started))

    def succeeded(self, username: str, address: str) -> None:
        """A login succeeded: the name's attempts are forgotten, and the address gets this one back."""
        keys = self._keys(username, address)
        t = login_throttle.c
        with self.engine.begin() as conn:
            conn.execute(delete(login_throttle).where(t.key.in_((keys["pair"], keys["account"]))))
            conn.execute(
                update(login_throttle).where(t.key == keys["address"], t.failures > 0).values(failures=t.failures - 1)
            )

    def unlock(self, username: str) -> int:
        """Lift every lock and forget every attempt of an account name, from any address; how many keys were held."""
        with self.engine.begin() as conn:
            done = conn.execute(delete(login_throttle).where(login_throttle.c.account == _digest("account", username)))
        return int(done.rowcount or 0)
