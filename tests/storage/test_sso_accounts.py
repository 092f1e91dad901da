"""Single sign-on accounts in the index (SQLite and PostgreSQL): one per issuer and subject, kept up to date."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from storage.index.accounts import AccountError, AccountStore, Role
from storage.index.database import IndexDatabase
from storage.index.sso_accounts import SsoAccounts, SsoIdentity

ISSUER = "https://sso.example-hospital.vn/realms/hospital"


def _identity(**more) -> SsoIdentity:
    values = {"issuer": ISSUER, "subject": "0f3a-77", "username": "bs.hanh", "display_name": "Lê Thị Hạnh",
              "role": Role.REFERRING, "patients": ("MRN-1", "MRN-2")}  # fmt: skip
    values.update(more)
    return SsoIdentity(**values)


def test_first_sight_makes_the_account_later_ones_update_it(index: IndexDatabase) -> None:
    sso, accounts = SsoAccounts(index.engine), AccountStore(index.engine)
    first = sso.sign_in(_identity())
    assert first is not None and (first.username, first.role, first.display_name) == ("bs.hanh", Role.REFERRING, "Lê Thị Hạnh")
    links, _ = accounts.links(first)
    assert [link.patient_id for link in links] == ["MRN-1", "MRN-2"]
    again = sso.sign_in(_identity(role=Role.RADIOLOGIST, display_name="Lê Thị Hạnh (BS)", patients=("MRN-3",)))
    assert again is not None and again.pk == first.pk and again.role is Role.RADIOLOGIST
    assert accounts.links(again)[0] == []  # links are a referring physician's only
    assert accounts.authenticate("bs.hanh", "any password at all") is None  # no password: no local login


def test_the_same_name_at_another_issuer_or_locally_is_another_account(index: IndexDatabase) -> None:
    sso, accounts = SsoAccounts(index.engine), AccountStore(index.engine)
    accounts.add_user("bs.hanh", Role.ADMIN, password="a long enough password")
    mine = sso.sign_in(_identity())
    theirs = sso.sign_in(_identity(issuer="https://other-hospital.vn/realms/x"))
    assert mine is not None and theirs is not None
    assert len({mine.pk, theirs.pk, accounts.user("bs.hanh").pk}) == 3
    assert mine.username.startswith("bs.hanh~") and theirs.username.startswith("bs.hanh~") and mine.username != theirs.username
    assert accounts.user("bs.hanh").role is Role.ADMIN


def test_signing_in_at_once_from_several_processes_makes_one_account(index: IndexDatabase) -> None:
    sso = SsoAccounts(index.engine)
    with ThreadPoolExecutor(4) as pool:
        users = list(pool.map(lambda _: sso.sign_in(_identity(subject="race")), range(8)))
    assert len({u.pk for u in users if u is not None}) == 1


def test_what_no_account_may_be(index: IndexDatabase) -> None:
    sso = SsoAccounts(index.engine)
    with pytest.raises(AccountError):
        sso.sign_in(_identity(role=Role.SHARE))
    with pytest.raises(AccountError):
        sso.sign_in(_identity(subject=""))
