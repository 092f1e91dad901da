"""Accounts in the index: one password policy for every path, logins that take as long whatever the user name,
tokens' lifetimes, and failed logins counted per account name and per address."""

from __future__ import annotations

import datetime as dt
import statistics
import time

import pytest
from sqlalchemy import update

from storage.index.accounts import AccountError, AccountStore, PasswordRejected, Role, hash_password
from storage.index.database import IndexDatabase
from storage.index.login_throttle import Limit, LoginThrottle
from storage.index.schema import users


@pytest.mark.parametrize(
    "username, password",
    [("admin", "a"), ("admin", "elevenchars"), ("dr.lan-admin", "DR.LAN-ADMIN"), ("dr.lan", "my-DR.LAN-password"),
     ("nurse", "nurse-station-1"), ("admin", "x" * 1025)],
)  # fmt: skip
def test_every_path_to_a_password_goes_through_the_policy(index: IndexDatabase, username: str, password: str) -> None:
    accounts = AccountStore(index.engine)
    with pytest.raises(PasswordRejected):
        accounts.add_user(username, Role.ADMIN, password=password)
    assert accounts.user(username) is None  # refused: nothing made
    accounts.add_user(username, Role.ADMIN, password="twelve chars ok")
    with pytest.raises(PasswordRejected):
        accounts.set_password(username, password)
    assert accounts.authenticate(username, "twelve chars ok") is not None  # the old one still holds


def test_acceptable_passwords(index: IndexDatabase) -> None:
    accounts = AccountStore(index.engine)
    accounts.add_user("an", Role.RADIOLOGIST, password="an-exactly-12")  # a user name under 4 characters may occur
    assert accounts.authenticate("an", "an-exactly-12") is not None
    accounts.add_user("token-only", Role.REFERRING)  # no password: token-only, never logs in
    assert accounts.authenticate("token-only", "") is None


def test_a_weak_password_set_before_the_policy_no_longer_logs_in(index: IndexDatabase) -> None:
    accounts = AccountStore(index.engine)
    accounts.add_user("old-admin", Role.ADMIN, password="a long enough password")
    with index.engine.begin() as conn:  # as an earlier release let it be stored
        conn.execute(update(users).where(users.c.username == "old-admin").values(password_hash=hash_password("a")))
    assert accounts.authenticate("old-admin", "a") is None
    accounts.set_password("old-admin", "a new long password")
    assert accounts.authenticate("old-admin", "a new long password") is not None


def interleaved_medians(*calls, tries: int = 9) -> list[float]:
    """The median time of each call, the calls taken in turn, so that a busy machine slows them alike."""
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(tries):
        for call, spent in zip(calls, times):
            start = time.perf_counter()
            call()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def test_an_unknown_user_takes_as_long_as_a_wrong_password(tmp_path) -> None:
    index = IndexDatabase.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
    accounts = AccountStore(index.engine)
    accounts.add_user("dr.known", Role.RADIOLOGIST, password="the right password")
    accounts.add_user("dr.tokens", Role.RADIOLOGIST)
    known, unknown, token_only = interleaved_medians(
        lambda: accounts.authenticate("dr.known", "a wrong password"),
        lambda: accounts.authenticate("dr.nobody", "a wrong password"),
        lambda: accounts.authenticate("dr.tokens", "a wrong password"),
    )
    assert unknown / known > 0.5 and token_only / known > 0.5, (known, unknown, token_only)
    index.close()


def test_tokens_live_as_long_as_asked_and_no_lifetime_is_explicit(index: IndexDatabase) -> None:
    accounts = AccountStore(index.engine)
    user = accounts.add_user("svc", Role.RADIOLOGIST)
    for hours in (0, -1, float("inf"), float("nan")):
        with pytest.raises(AccountError):
            accounts.issue_token(user, hours=hours)
    assert accounts.token_user(accounts.issue_token(user, hours=1)) == user
    assert accounts.token_user(accounts.issue_token(user, hours=None)) == user


T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.timezone.utc)
LIMIT = Limit(3, dt.timedelta(minutes=15), dt.timedelta(minutes=1), dt.timedelta(minutes=10))


def test_failures_lock_an_account_name_for_longer_each_time(index: IndexDatabase) -> None:
    throttle = LoginThrottle(index.engine, account=LIMIT, address=Limit(100, LIMIT.window, LIMIT.first_lock, LIMIT.longest_lock))
    assert throttle.failed("dr.an", "10.0.0.1", T0) == [] and throttle.failed("dr.an", "10.0.0.2", T0) == []
    assert throttle.locked("dr.an", "10.0.0.3", T0) is None
    [lock] = throttle.failed("dr.an", "10.0.0.3", T0)  # the third, from anywhere
    assert (lock.scope, lock.seconds) == ("account", 60)
    other = LoginThrottle(index.engine, account=LIMIT)  # another process sharing the index
    assert other.locked("dr.an", "10.9.9.9", T0 + dt.timedelta(seconds=59)).scope == "account"
    assert other.locked("dr.an", "10.9.9.9", T0 + dt.timedelta(seconds=60)) is None
    assert other.locked("dr.binh", "10.0.0.1", T0) is None  # only that name
    seconds = []
    now = T0 + dt.timedelta(seconds=60)
    for _ in range(4):
        for _ in range(LIMIT.failures):
            started = throttle.failed("dr.an", "10.0.0.1", now)
        seconds.append(started[0].seconds)
        now += dt.timedelta(seconds=started[0].seconds)
    assert seconds == [120, 240, 480, 600]  # doubling, up to the longest
    throttle.succeeded("dr.an")
    assert [throttle.failed("dr.an", "10.0.0.1", now) for _ in range(2)] == [[], []]  # afresh


def test_failures_spread_out_do_not_lock(index: IndexDatabase) -> None:
    throttle = LoginThrottle(index.engine, account=LIMIT)
    now = T0
    for _ in range(10):
        assert throttle.failed("dr.slow", "10.0.0.1", now) == []
        now += dt.timedelta(minutes=8)  # two a window at most


def test_failures_from_one_address_lock_it_for_every_name(index: IndexDatabase) -> None:
    throttle = LoginThrottle(index.engine, account=LIMIT, address=LIMIT)
    assert throttle.failed("a", "2001:db8::1", T0) == [] and throttle.failed("b", "2001:db8::2", T0) == []
    [lock] = throttle.failed("c", "2001:db8::3", T0)  # one /64, three names
    assert lock.scope == "address"
    assert throttle.locked("dr.any", "2001:db8::ffff", T0).scope == "address"
    assert throttle.locked("dr.any", "2001:db8:1::1", T0) is None
    throttle.failed("d", "::ffff:10.1.1.1", T0), throttle.failed("e", "10.1.1.1", T0), throttle.failed("f", "10.1.1.1", T0)
    assert throttle.locked("g", "10.1.1.1", T0).scope == "address"  # an IPv4 peer of a dual-stack socket is that IPv4 address
