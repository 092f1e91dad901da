"""Accounts of single sign-on users: one ``users`` row per identity at the provider (issuer + subject).

A user of the hospital's identity provider gets a local account the first time a token of theirs is accepted, so
that the audit trail, report signatures and patient links name them like anyone else. It has no password (it
cannot log in locally) and its role, display name and patient links follow the provider's claims at every sign-in.
Disabling it locally (``users.disabled``) shuts it out whatever the provider says.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from storage.index.accounts import ACCOUNT_ROLES, AccountError, Role, User
from storage.index.schema import sso_identities, user_patients, users
from storage.index.times import utc_now


@dataclass(frozen=True)
class SsoIdentity:
    """Who a verified token names, as the gateway's claim mapping read it."""

    issuer: str
    subject: str
    username: str  # wished for; the account gets another when a local one has it already
    display_name: str
    role: Role
    patients: tuple[str, ...] | None  # patient IDs to link (referring); None: links are managed locally


class SsoAccounts:
    """Creates or updates the account of a single sign-on identity, in one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def sign_in(self, identity: SsoIdentity) -> User | None:
        """The identity's account, made on first sight and brought up to date; None when it is disabled locally."""
        if identity.role not in ACCOUNT_ROLES:
            raise AccountError(f"the {identity.role.value} role is not given to accounts")
        if not identity.subject or len(identity.subject) > 255 or len(identity.issuer) > 512:
            raise AccountError("a subject is 1 to 255 characters, an issuer at most 512")
        for _attempt in range(2):  # another process may make the same identity's account at the same moment
            try:
                with self.engine.begin() as conn:
                    return self._sign_in(conn, identity)
            except IntegrityError:
                continue
        raise AccountError("the account of this identity could not be made")

    def _sign_in(self, conn: Connection, identity: SsoIdentity) -> User | None:
        key = (sso_identities.c.issuer == identity.issuer, sso_identities.c.subject == identity.subject)
        pk = conn.execute(select(sso_identities.c.user_pk).where(*key)).scalar()
        display = identity.display_name[:128]
        if pk is None:
            username = self._free_name(conn, identity)
            pk = conn.execute(
                insert(users)
                .values(username=username, role=identity.role.value, display_name=display, password_hash="", disabled=0,
                        created_at=utc_now())  # fmt: skip
                .returning(users.c.pk)
            ).scalar_one()
            conn.execute(insert(sso_identities).values(issuer=identity.issuer, subject=identity.subject, user_pk=pk,
                                                       last_seen=utc_now()))  # fmt: skip
        else:
            conn.execute(update(sso_identities).where(*key).values(last_seen=utc_now()))
            conn.execute(update(users).where(users.c.pk == pk).values(role=identity.role.value, display_name=display))
        row = conn.execute(select(users).where(users.c.pk == pk)).one()
        if row.disabled:
            return None
        if identity.patients is not None:
            conn.execute(delete(user_patients).where(user_patients.c.user_pk == pk))
            linked = sorted({p for p in identity.patients if 0 < len(p) <= 64}) if identity.role is Role.REFERRING else []
            if linked:
                conn.execute(insert(user_patients), [{"user_pk": pk, "patient_id": p} for p in linked])
        return User(int(pk), row.username, Role(row.role), row.display_name)

    @staticmethod
    def _free_name(conn: Connection, identity: SsoIdentity) -> str:
        """The wished-for name, or when an account has it already (a local one, another provider's) the name with a
        short digest of issuer and subject: never someone else's account."""
        wished = (identity.username or identity.subject)[:64]
        if conn.execute(select(users.c.pk).where(users.c.username == wished)).first() is None:
            return wished
        tag = hashlib.sha256(f"{identity.issuer}\n{identity.subject}".encode()).hexdigest()[:10]
        return f"{wished[:53]}~{tag}"
