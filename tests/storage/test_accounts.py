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
from storage.index.login_throttle import Limit, Lockout, LoginThrottle
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


WIDE = Limit(100, LIMIT.window, LIMIT.first_lock, LIMIT.longest_lock)


def test_attempts_lock_a_name_from_an_address_for_longer_each_time(index: IndexDatabase) -> None:
    throttle = LoginThrottle(index.engine, pair=LIMIT, address=WIDE, account=WIDE)
    assert [throttle.attempt("dr.an", "10.0.0.1", T0).refused for _ in range(3)] == [None] * 3  # three checked
    fourth = throttle.attempt("dr.an", "10.0.0.1", T0)
    assert fourth.refused == Lockout("pair", 60) and fourth.started == (Lockout("pair", 60),)
    other = LoginThrottle(index.engine, pair=LIMIT, address=WIDE, account=WIDE)  # another process sharing the index
    assert other.attempt("dr.an", "10.0.0.1", T0 + dt.timedelta(seconds=59)).refused.scope == "pair"
    assert other.attempt("dr.an", "10.0.0.2", T0).refused is None  # from elsewhere the name is still heard
    assert other.attempt("dr.binh", "10.0.0.1", T0).refused is None  # and other names from there
    seconds = []
    now = T0 + dt.timedelta(seconds=60)
    for _ in range(4):
        for _ in range(LIMIT.failures):
            assert throttle.attempt("dr.an", "10.0.0.1", now).refused is None
        [lock] = throttle.attempt("dr.an", "10.0.0.1", now).started
        seconds.append(lock.seconds)
        now += dt.timedelta(seconds=lock.seconds)
    assert seconds == [120, 240, 480, 600]  # doubling, up to the longest
    throttle.succeeded("dr.an", "10.0.0.1")
    assert [throttle.attempt("dr.an", "10.0.0.1", now).refused for _ in range(3)] == [None] * 3  # afresh


def test_attempts_while_locked_are_not_counted(index: IndexDatabase) -> None:
    throttle = LoginThrottle(index.engine, pair=LIMIT, address=WIDE, account=WIDE)
    for _ in range(LIMIT.failures + 1):
        throttle.attempt("dr.an", "10.0.0.1", T0)
    for n in range(20):  # a client retrying all through its lockout
        assert throttle.attempt("dr.an", "10.0.0.1", T0 + dt.timedelta(seconds=n)).refused is not None
    later = T0 + dt.timedelta(seconds=61)
    assert [throttle.attempt("dr.an", "10.0.0.1", later).refused for _ in range(3)] == [None] * 3


def test_a_name_from_everywhere_locks_for_a_short_while_and_unlock_lifts_it(index: IndexDatabase) -> None:
    short = Limit(3, dt.timedelta(minutes=15), dt.timedelta(minutes=1), dt.timedelta(minutes=2))
    throttle = LoginThrottle(index.engine, pair=WIDE, address=WIDE, account=short)
    assert [throttle.attempt("admin", f"10.0.0.{n}", T0).refused for n in range(3)] == [None] * 3
    assert throttle.attempt("admin", "10.0.0.9", T0).refused == Lockout("account", 60)
    now = T0
    for _ in range(3):  # kept up, the lock grows only to the account's longest
        now += dt.timedelta(minutes=2)
        for n in range(3):
            throttle.attempt("admin", f"10.0.1.{n}", now)
        lock = throttle.attempt("admin", "10.0.1.9", now).refused
    assert lock == Lockout("account", 120)
    assert throttle.unlock("admin") >= 1
    assert throttle.attempt("admin", "10.0.0.1", now).refused is None
    assert throttle.unlock("nobody") == 0


def test_attempts_spread_out_do_not_lock(index: IndexDatabase) -> None:
    throttle = LoginThrottle(index.engine, pair=LIMIT, address=LIMIT, account=LIMIT)
    now = T0
    for _ in range(10):
        assert throttle.attempt("dr.slow", "10.0.0.1", now).refused is None
        now += dt.timedelta(minutes=8)  # two a window at most


def test_a_success_gives_the_address_its_attempt_back(index: IndexDatabase) -> None:
    throttle = LoginThrottle(index.engine, pair=WIDE, address=LIMIT, account=WIDE)
    for n in range(10):  # ten people behind one NAT logging in, each at the first try
        assert throttle.attempt(f"user-{n}", "10.2.2.2", T0).refused is None
        throttle.succeeded(f"user-{n}", "10.2.2.2")


def test_attempts_from_one_address_lock_it_for_every_name(index: IndexDatabase) -> None:
    throttle = LoginThrottle(index.engine, pair=WIDE, address=LIMIT, account=WIDE)
    for name, address in (("a", "2001:db8::1"), ("b", "2001:db8::2"), ("c", "2001:db8::3")):  # one /64, three names
        assert throttle.attempt(name, address, T0).refused is None
    assert throttle.attempt("dr.any", "2001:db8::ffff", T0).refused.scope == "address"
    assert throttle.attempt("dr.any", "2001:db8:1::1", T0).refused is None
    for name, address in (("d", "::ffff:10.1.1.1"), ("e", "10.1.1.1"), ("f", "10.1.1.1")):
        throttle.attempt(name, address, T0)
    assert throttle.attempt("g", "10.1.1.1", T0).refused.scope == "address"  # an IPv4 peer of a dual-stack socket is that IPv4 address
