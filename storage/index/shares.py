"""Share links: a token that opens one study, read-only, until it expires or is revoked.

A token is ``share.`` and 32 random bytes (URL-safe Base64); only its SHA-256
digest is stored. Whoever holds it acts as the principal ``share:<id>`` with
the role ``share``, bound to the link's study.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from storage.index.accounts import Role, User, token_digest
from storage.index.reports import NoSuchStudy
from storage.index.schema import share_links, studies
from storage.index.times import as_utc, utc_now

SHARE_PREFIX = "share."


class ShareError(Exception):
    pass


class ShareExpired(ShareError):
    """A known share token whose link has expired or was revoked."""

    def __init__(self, link: ShareLink) -> None:
        super().__init__("this share link has expired or was revoked")
        self.link = link


@dataclass(frozen=True)
class ShareLink:
    pk: int
    study_uid: str
    label: str
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked: bool
    revoked_at: dt.datetime | None
    revoked_by: str

    @property
    def username(self) -> str:
        return f"share:{self.pk}"

    def active(self, now: dt.datetime | None = None) -> bool:
        return not self.revoked and self.expires_at > (now or utc_now())



def _link(row: Any) -> ShareLink:
    return ShareLink(
        pk=row.pk, study_uid=row.study_uid, label=row.label, created_by=row.created_by,
        created_at=as_utc(row.created_at), expires_at=as_utc(row.expires_at),
        revoked=bool(row.revoked), revoked_at=as_utc(row.revoked_at), revoked_by=row.revoked_by,
    )  # fmt: skip


def is_share_token(token: str) -> bool:
    return token.startswith(SHARE_PREFIX)


def share_principal(link: ShareLink) -> User:
    """The read-only principal a link's holder acts as; never a row of ``users``."""
    return User(pk=-link.pk, username=link.username, role=Role.SHARE, share_study=link.study_uid)


class ShareStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, study_uid: str, *, hours: float, label: str, created_by: str) -> tuple[str, ShareLink]:
        """A new link to an indexed study and its token (shown once, never stored); raises NoSuchStudy."""
        token = SHARE_PREFIX + secrets.token_urlsafe(32)
        now = utc_now()
        values = {
            "digest": token_digest(token), "study_uid": study_uid, "label": label, "created_by": created_by,
            "created_at": now, "expires_at": now + dt.timedelta(hours=hours), "revoked": 0, "revoked_by": "",
        }  # fmt: skip
        try:
            with self.engine.begin() as conn:
                if conn.execute(select(studies.c.pk).where(studies.c.study_uid == study_uid)).first() is None:
                    raise NoSuchStudy(f"no study {study_uid} in the index")
                pk = conn.execute(insert(share_links).values(**values).returning(share_links.c.pk)).scalar_one()
                row = conn.execute(select(share_links).where(share_links.c.pk == pk)).one()
        except SQLAlchemyError as exc:
            raise ShareError(f"share link not created: {type(exc).__name__}") from exc
        return token, _link(row)

    def for_study(self, study_uid: str) -> list[ShareLink]:
        """Every link to a study, newest first, revoked and expired ones included."""
        stmt = select(share_links).where(share_links.c.study_uid == study_uid).order_by(share_links.c.pk.desc())
        with self.engine.connect() as conn:
            return [_link(row) for row in conn.execute(stmt)]

    def revoke(self, pk: int, *, by: str) -> ShareLink | None:
        """Revoke a link (again is harmless: the first revocation is kept); None when there is no such link."""
        with self.engine.begin() as conn:
            conn.execute(
                update(share_links)
                .where(share_links.c.pk == pk, share_links.c.revoked == 0)
                .values(revoked=1, revoked_at=utc_now(), revoked_by=by)
            )
            row = conn.execute(select(share_links).where(share_links.c.pk == pk)).first()
        return None if row is None else _link(row)

    def token_user(self, token: str) -> User | None:
        """The principal of a live link's token; None for an unknown token; raises ShareExpired for a dead link."""
        with self.engine.connect() as conn:
            row = conn.execute(select(share_links).where(share_links.c.digest == token_digest(token))).first()
        if row is None:
            return None
        link = _link(row)
        if not link.active():
            raise ShareExpired(link)
        return share_principal(link)
