"""Share links in the index: only the token's digest is kept; a link resolves to a read-only principal until it dies."""

from __future__ import annotations

import hashlib
import time

import pytest
from sqlalchemy import select

from storage.index.accounts import AccountError, AccountStore, Role
from storage.index.database import IndexDatabase
from storage.index.reports import NoSuchStudy
from storage.index.schema import share_links
from storage.index.shares import ShareExpired, ShareStore
from tests.factory import ct_series
from tests.storage.conftest import records


def _study(index: IndexDatabase) -> str:
    datasets = ct_series(1, size=16)
    index.commit(records(datasets))
    return datasets[0].StudyInstanceUID


def test_a_link_opens_its_study_as_a_share_principal(index: IndexDatabase) -> None:
    shares = ShareStore(index.engine)
    study = _study(index)
    with pytest.raises(NoSuchStudy):
        shares.create("1.2.3.4", hours=1, label="", created_by="dr.an")
    token, link = shares.create(study, hours=1, label="cho bệnh nhân", created_by="dr.an")
    assert token.startswith("share.") and len(token) > 40
    assert link.active() and link.label == "cho bệnh nhân" and link.created_by == "dr.an"
    with index.engine.connect() as conn:
        [row] = conn.execute(select(share_links)).all()
    assert row.digest == hashlib.sha256(token.encode()).hexdigest()
    assert token.removeprefix("share.") not in repr(tuple(row))  # the token itself is nowhere
    principal = shares.token_user(token)
    assert principal is not None
    assert (principal.username, principal.role, principal.share_study) == (f"share:{link.pk}", Role.SHARE, study)
    assert shares.token_user("share.made-up") is None
    assert [found.pk for found in shares.for_study(study)] == [link.pk]


def test_expired_and_revoked_links_say_so(index: IndexDatabase) -> None:
    shares = ShareStore(index.engine)
    study = _study(index)
    short_token, short = shares.create(study, hours=0.5 / 3600, label="", created_by="dr.an")
    long_token, long = shares.create(study, hours=24, label="", created_by="dr.an")
    time.sleep(0.6)
    with pytest.raises(ShareExpired) as expired:
        shares.token_user(short_token)
    assert expired.value.link.pk == short.pk
    assert shares.revoke(long.pk, by="dr.binh").revoked  # type: ignore[union-attr]
    first_revocation = shares.revoke(long.pk, by="admin")  # again: harmless, the first is kept
    assert first_revocation is not None and first_revocation.revoked_by == "dr.binh"
    with pytest.raises(ShareExpired):
        shares.token_user(long_token)
    assert shares.revoke(10_000, by="dr.binh") is None
    assert [(link.pk, link.active()) for link in shares.for_study(study)] == [(long.pk, False), (short.pk, False)]


def test_the_share_role_is_never_an_account(index: IndexDatabase) -> None:
    with pytest.raises(AccountError, match="not given to accounts"):
        AccountStore(index.engine).add_user("share:1", Role.SHARE)
