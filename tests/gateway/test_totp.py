"""The second factor's rules with real pyotp codes and a real index (SQLite and PostgreSQL): enrolment confirmed by
a first code, one step of drift, each step once, recovery codes once each, sealed secrets, and a reset."""

from __future__ import annotations

import pyotp
import pytest
from sqlalchemy import select

from gateway.totp import STEP_SECONDS, SecondFactor, Verdict, matching_step, recovery_digest
from storage.index.accounts import AccountStore, Role, User
from storage.index.database import IndexDatabase
from storage.index.schema import recovery_codes, second_factors

SECRET = b"totp-test-secret-0123456789abcdefghij"
NOW = 1_800_000_015.0  # in the middle of a step


@pytest.fixture
def admin(index: IndexDatabase) -> User:
    return AccountStore(index.engine).add_user("root.admin", Role.ADMIN, password="a long admin password")


def enrol(factor: SecondFactor, user: User) -> tuple[pyotp.TOTP, tuple[str, ...]]:
    shown = factor.check(user, now=NOW)
    assert shown.verdict is Verdict.ENROL and shown.enrolment is not None
    totp = pyotp.parse_uri(shown.enrolment.uri)
    confirmed = factor.check(user, code=totp.at(NOW), now=NOW)
    assert confirmed.verdict is Verdict.CONFIRMED
    return totp, confirmed.recovery_codes


def test_drift_of_one_step_either_way_and_no_more() -> None:
    secret = pyotp.random_base32()
    totp = pyotp.TOTP(secret)
    step = int(NOW // STEP_SECONDS)
    for offset in (-1, 0, 1):
        assert matching_step(secret, totp.at(NOW + offset * STEP_SECONDS), NOW) == step + offset
    for offset in (-2, 2):
        code = totp.at(NOW + offset * STEP_SECONDS)
        if code not in {totp.at(NOW + o * STEP_SECONDS) for o in (-1, 0, 1)}:  # a chance collision is a match
            assert matching_step(secret, code, NOW) is None
    assert matching_step(secret, "12345", NOW) is None and matching_step(secret, "abcdef", NOW) is None


def test_enrolment_is_pending_until_its_first_code(index: IndexDatabase, admin: User) -> None:
    factor = SecondFactor(index.engine, secret=SECRET, issuer="BV Chợ Rẫy PACS")
    first = factor.check(admin, now=NOW)
    again = factor.check(admin, now=NOW)
    assert first.verdict is again.verdict is Verdict.ENROL
    assert first.enrolment == again.enrolment  # the same pending secret until confirmed
    assert first.enrolment is not None
    uri = first.enrolment.uri
    assert uri.startswith("otpauth://totp/") and "issuer=BV%20Ch%E1%BB%A3%20R%E1%BA%ABy%20PACS" in uri and "root.admin" in uri
    totp = pyotp.parse_uri(uri)
    wrong = factor.check(admin, code="000000" if totp.at(NOW) != "000000" else "111111", now=NOW)
    assert wrong.verdict is Verdict.WRONG_CODE and wrong.enrolment == first.enrolment
    confirmed = factor.check(admin, code=totp.at(NOW), now=NOW)
    assert confirmed.verdict is Verdict.CONFIRMED and len(set(confirmed.recovery_codes)) == 10
    # The confirming code's step is taken: it does not log in again; the next step's does, once.
    assert factor.check(admin, code=totp.at(NOW), now=NOW).verdict is Verdict.REPLAYED
    assert factor.check(admin, now=NOW).verdict is Verdict.CODE_NEEDED
    later = NOW + STEP_SECONDS
    assert factor.check(admin, code=totp.at(later), now=later).verdict is Verdict.PASSED
    assert factor.check(admin, code=totp.at(later), now=later).verdict is Verdict.REPLAYED
    # An earlier step's code, within the drift but before the last taken, is a replay too.
    assert factor.check(admin, code=totp.at(NOW), now=later).verdict is Verdict.REPLAYED


def test_recovery_codes_are_good_once_and_kept_as_digests(index: IndexDatabase, admin: User) -> None:
    factor = SecondFactor(index.engine, secret=SECRET, issuer="PACS")
    _totp, codes = enrol(factor, admin)
    used = factor.check(admin, recovery_code=codes[3].upper().replace("-", " "), now=NOW)  # as typed from paper
    assert used.verdict is Verdict.RECOVERY_USED and used.recovery_codes_left == 9
    assert factor.check(admin, recovery_code=codes[3], now=NOW).verdict is Verdict.WRONG_RECOVERY
    assert factor.check(admin, recovery_code="aaaa-bbbb-cccc-dddd", now=NOW).verdict is Verdict.WRONG_RECOVERY
    other = AccountStore(index.engine).add_user("dr.other", Role.RADIOLOGIST, password="another long password")
    enrol(factor, other)
    assert factor.check(other, recovery_code=codes[4], now=NOW).verdict is Verdict.WRONG_RECOVERY  # not theirs
    with index.engine.connect() as conn:
        kept = {r.digest for r in conn.execute(select(recovery_codes).where(recovery_codes.c.user_pk == admin.pk))}
    assert recovery_digest(admin.pk, codes[0]) in kept and not any(c.replace("-", "") in d for c in codes for d in kept)


def test_the_secret_is_sealed_and_opens_only_with_its_key(index: IndexDatabase, admin: User) -> None:
    factor = SecondFactor(index.engine, secret=SECRET, issuer="PACS")
    totp, _codes = enrol(factor, admin)
    with index.engine.connect() as conn:
        row = conn.execute(select(second_factors).where(second_factors.c.user_pk == admin.pk)).one()
    assert totp.secret.encode() not in bytes(row.ciphertext) and row.key_id
    later = NOW + STEP_SECONDS
    other_key = SecondFactor(index.engine, secret=SECRET[::-1], issuer="PACS")
    assert other_key.check(admin, code=totp.at(later), now=later).verdict is Verdict.UNREADABLE
    no_secret = SecondFactor(index.engine, secret=None, issuer="PACS")  # the key kept in the index is another key
    assert no_secret.check(admin, code=totp.at(later), now=later).verdict is Verdict.UNREADABLE
    assert factor.check(admin, code=totp.at(later), now=later).verdict is Verdict.PASSED
    # A row moved onto another account does not open there (the account is the associated data).
    radiologist = AccountStore(index.engine).add_user("dr.moved", Role.RADIOLOGIST, password="a moved long password")
    with index.engine.begin() as conn:
        conn.execute(second_factors.insert().values(
            user_pk=radiologist.pk, key_id=row.key_id, nonce=row.nonce, ciphertext=row.ciphertext,
            created_at=row.created_at, confirmed_at=row.confirmed_at,
        ))  # fmt: skip
    assert factor.check(radiologist, code=totp.at(later + STEP_SECONDS), now=later).verdict is Verdict.UNREADABLE


def test_without_a_secret_the_key_kept_in_the_index_serves_every_process(index: IndexDatabase, admin: User) -> None:
    one, two = (SecondFactor(index.engine, secret=None, issuer="PACS") for _ in range(2))
    totp, _codes = enrol(one, admin)
    later = NOW + STEP_SECONDS
    assert two.check(admin, code=totp.at(later), now=later).verdict is Verdict.PASSED
    assert one.check(admin, code=totp.at(later), now=later).verdict is Verdict.REPLAYED  # the step is shared too


def test_a_reset_forgets_secret_and_recovery_codes(index: IndexDatabase, admin: User) -> None:
    factor = SecondFactor(index.engine, secret=SECRET, issuer="PACS")
    totp, codes = enrol(factor, admin)
    assert factor.reset(admin) is True and factor.reset(admin) is False
    assert factor.check(admin, recovery_code=codes[0], now=NOW).verdict is Verdict.WRONG_CODE  # enrolling again
    fresh = factor.check(admin, now=NOW)
    assert fresh.verdict is Verdict.ENROL and fresh.enrolment is not None and fresh.enrolment.secret != totp.secret


def test_login_settings_are_checked_at_start() -> None:
    from gateway.settings import SettingsError, load_settings

    assert load_settings(environ={"PACSGW_LOGIN_TRUSTED_NETWORKS": "10.0.0.0/8, 192.168.1.7"}).login.trusted_networks == [
        "10.0.0.0/8", "192.168.1.7",
    ]  # fmt: skip
    with pytest.raises(SettingsError, match="login.trusted_networks: '10.0.0.0/33'"):
        load_settings(environ={"PACSGW_LOGIN_TRUSTED_NETWORKS": "10.0.0.0/33"})
    with pytest.raises(SettingsError, match="login.totp_issuer"):
        load_settings(environ={"PACSGW_LOGIN_TOTP_ISSUER": " "})
