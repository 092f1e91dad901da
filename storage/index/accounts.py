"""Users, bearer tokens, referring physicians' patient links and study grants, and the audit trail.

The password policy lives here, so that every way of setting a password (the
command line, a script, a later API) goes through it: at least
``MIN_PASSWORD_LENGTH`` characters, neither the user name nor containing it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import math
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from storage.index.schema import audit_events, audit_keys, patients, tokens, user_patient_ids, user_patients, user_studies, users
from storage.index.times import utc_now
from storage.uids import is_valid_uid


class Role(str, Enum):
    ADMIN = "admin"
    RADIOLOGIST = "radiologist"
    REFERRING = "referring"  # sees only the studies of patients linked to them, or granted
    AUDITOR = "auditor"  # reads the audit trail, no patient data
    SHARE = "share"  # the holder of a share link (storage.index.shares): one study, read-only; never an account


ACCOUNT_ROLES = tuple(role for role in Role if role is not Role.SHARE)


class AccountError(Exception):
    pass


class AmbiguousPatient(AccountError):
    """A patient ID the index holds under several issuers, named without one."""


@dataclass(frozen=True)
class PatientLink:
    patient_id: str
    issuer: str | None  # None: not named (see storage.index.scope)


class PasswordRejected(AccountError):
    """A password the policy refuses; the message says why."""


MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024


def password_problem(username: str, password: str) -> str | None:
    """Why the policy refuses this password for this user, or None when it is acceptable."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password has at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"a password has at most {MAX_PASSWORD_LENGTH} characters"
    name, folded = username.casefold(), password.casefold()
    if folded == name or (len(name) >= 4 and name in folded):
        return "a password must not be the user name nor contain it"
    return None


@dataclass(frozen=True)
class User:
    pk: int
    username: str
    role: Role
    display_name: str = ""
    share_study: str = ""  # a share link's principal: the one study it opens


# scrypt (RFC 7914), a standard memory-hard password hash; parameters stored with each hash.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    encode = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${encode(salt)}${encode(digest)}"


# Verified against when there is no hash to verify (an unknown user, a token-only account), so that a wrong
# user name costs the same scrypt work as a wrong password: how long a login takes tells nothing.
_NO_HASH = "scrypt${}${}${}${}${}".format(
    _SCRYPT_N, _SCRYPT_R, _SCRYPT_P, base64.b64encode(bytes(16)).decode(), base64.b64encode(bytes(32)).decode()
)


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        candidate = hashlib.scrypt(
            password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(candidate, base64.b64decode(digest))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_password(username: str, password: str) -> None:
    problem = password_problem(username, password)
    if problem:
        raise PasswordRejected(problem)


class AccountStore:
    """Accounts in the index: users and their password hashes, bearer tokens, referring physicians' patients
    and studies, and the audit trail."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add_user(self, username: str, role: Role, *, password: str = "", display_name: str = "") -> User:
        if not username or len(username) > 64:
            raise AccountError("a user name is 1 to 64 characters")
        if role not in ACCOUNT_ROLES:
            raise AccountError(f"the {role.value} role is not given to accounts")
        if password:
            _check_password(username, password)
        values = {
            "username": username,
            "role": role.value,
            "display_name": display_name,
            "password_hash": hash_password(password) if password else "",
            "disabled": 0,
            "created_at": utc_now(),
        }
        try:
            with self.engine.begin() as conn:
                pk = conn.execute(insert(users).values(**values).returning(users.c.pk)).scalar_one()
        except IntegrityError:
            raise AccountError(f"user {username!r} exists") from None
        return User(int(pk), username, role, display_name)

    def user(self, username: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.username == username, users.c.disabled == 0)).first()
        return None if row is None else User(row.pk, row.username, Role(row.role), row.display_name)

    def set_password(self, username: str, password: str) -> int:
        """Set a user's password and revoke their tokens in the same transaction (a reset after a leak must shut out
        whoever holds one); how many were revoked."""
        _check_password(username, password)
        with self.engine.begin() as conn:
            row = conn.execute(
                update(users).where(users.c.username == username).values(password_hash=hash_password(password)).returning(users.c.pk)
            ).first()
            if row is None:
                raise AccountError(f"no user {username!r}")
            revoked = conn.execute(update(tokens).where(tokens.c.user_pk == row.pk, tokens.c.revoked == 0).values(revoked=1))
        return int(revoked.rowcount or 0)

    def authenticate(self, username: str, password: str) -> User | None:
        """The user if the password is theirs; None otherwise, after the same work whether the user exists or not.

        A password the policy refuses never logs in, even when it is the one stored (set before the policy):
        its account needs a new one (``pacs-gateway user password``)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.username == username, users.c.disabled == 0)).first()
        stored = str(row.password_hash) if row is not None else ""
        matches = verify_password(password, stored or _NO_HASH)
        if row is None or not stored or not matches or password_problem(username, password):
            return None
        return User(row.pk, row.username, Role(row.role), row.display_name)

    def issue_token(self, user: User, *, hours: float | None, label: str = "") -> str:
        """A new bearer token for the user, valid ``hours`` (None: until revoked, only when asked for)."""
        if hours is not None and (isinstance(hours, bool) or not math.isfinite(hours) or hours <= 0):
            raise AccountError("a token's lifetime is a positive number of hours")
        token = secrets.token_urlsafe(32)
        expires = utc_now() + dt.timedelta(hours=hours) if hours is not None else None
        with self.engine.begin() as conn:
            conn.execute(
                insert(tokens).values(
                    digest=token_digest(token), user_pk=user.pk, label=label, created_at=utc_now(), expires_at=expires, revoked=0
                )
            )
        return token

    def revoke_tokens(self, username: str) -> int:
        user = self.user(username)
        if user is None:
            raise AccountError(f"no user {username!r}")
        with self.engine.begin() as conn:
            return conn.execute(update(tokens).where(tokens.c.user_pk == user.pk).values(revoked=1)).rowcount

    def revoke_token(self, token: str) -> bool:
        """Revoke one token (a logout); whether it was valid."""
        with self.engine.begin() as conn:
            done = conn.execute(update(tokens).where(tokens.c.digest == token_digest(token), tokens.c.revoked == 0).values(revoked=1))
        return bool(done.rowcount)

    def token_user(self, token: str) -> User | None:
        stmt = (
            select(users.c.pk, users.c.username, users.c.role, users.c.display_name, tokens.c.expires_at)
            .select_from(tokens.join(users, users.c.pk == tokens.c.user_pk))
            .where(tokens.c.digest == token_digest(token), tokens.c.revoked == 0, users.c.disabled == 0)
        )
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            return None
        expires = row.expires_at
        if expires is not None:
            if expires.tzinfo is None:  # SQLite returns naive datetimes
                expires = expires.replace(tzinfo=dt.timezone.utc)
            if expires < utc_now():
                return None
        return User(row.pk, row.username, Role(row.role), row.display_name)

    def link_patient(self, username: str, patient_id: str, issuer: str | None = None) -> PatientLink:
        """Let a referring physician see a patient's studies: the patient with this ID and issuer.

        Without an issuer, the one the index holds the ID under; refused (AmbiguousPatient) when it holds the
        ID under several; when it holds none yet, a link naming no issuer (see storage.index.scope)."""
        user = self._referring(username)
        if not 0 < len(patient_id) <= 64 or (issuer is not None and len(issuer) > 64):
            raise AccountError("a patient ID is 1 to 64 characters, an issuer at most 64")
        with self.engine.begin() as conn:
            if issuer is None:
                held = [r[0] for r in conn.execute(select(patients.c.issuer).where(patients.c.patient_id == patient_id).distinct())]
                if len(held) > 1:
                    raise AmbiguousPatient(
                        f"the index holds patient ID {patient_id!r} under {len(held)} issuers: name the patient's with --issuer"
                    )
                issuer = held[0] if held else None
            unnamed = user_patients.c
            conn.execute(delete(user_patients).where(unnamed.user_pk == user.pk, unnamed.patient_id == patient_id))
            if issuer is None:
                conn.execute(insert(user_patients).values(user_pk=user.pk, patient_id=patient_id))
            else:
                named = user_patient_ids.c
                key = (named.user_pk == user.pk, named.patient_id == patient_id, named.issuer == issuer)
                conn.execute(delete(user_patient_ids).where(*key))
                conn.execute(insert(user_patient_ids).values(user_pk=user.pk, patient_id=patient_id, issuer=issuer))
        return PatientLink(patient_id, issuer)

    def grant_study(self, username: str, study_uid: str) -> None:
        user = self._referring(username)
        if not is_valid_uid(study_uid):
            raise AccountError(f"{study_uid!r} is not a DICOM UID (a Study Instance UID such as 1.2.840.113619.2.55.3)")
        with self.engine.begin() as conn:
            conn.execute(delete(user_studies).where(user_studies.c.user_pk == user.pk, user_studies.c.study_uid == study_uid))
            conn.execute(insert(user_studies).values(user_pk=user.pk, study_uid=study_uid))

    def _referring(self, username: str) -> User:
        """The referring physician named: links and grants narrow what they see; every other role sees all or none."""
        user = self.user(username)
        if user is None:
            raise AccountError(f"no user {username!r}")
        if user.role is not Role.REFERRING:
            raise AccountError(f"user {username!r} is {user.role.value}: only referring physicians are given patients or studies")
        return user

    def links(self, user: User) -> tuple[list[PatientLink], list[str]]:
        """The patients linked to a user (sorted) and the study UIDs granted to them."""
        with self.engine.connect() as conn:
            named = conn.execute(
                select(user_patient_ids.c.patient_id, user_patient_ids.c.issuer).where(user_patient_ids.c.user_pk == user.pk)
            ).all()
            unnamed = conn.execute(select(user_patients.c.patient_id).where(user_patients.c.user_pk == user.pk)).all()
            granted = [r[0] for r in conn.execute(select(user_studies.c.study_uid).where(user_studies.c.user_pk == user.pk))]
        patient_links = [PatientLink(r.patient_id, r.issuer) for r in named] + [PatientLink(r.patient_id, None) for r in unnamed]
        return sorted(patient_links, key=lambda link: (link.patient_id, link.issuer or "")), sorted(granted)

    def audit_key(self) -> bytes:
        """The audit trail's digest key when there is no de-identification secret: 32 random bytes, made once, kept
        in the index, so that every process sharing it digests alike (and ``user audit-digest`` with them)."""
        with self.engine.begin() as conn:
            key = conn.execute(select(audit_keys.c.key).where(audit_keys.c.pk == 1)).scalar()
            if key is None:
                insert_ = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
                made = insert_(audit_keys).values(pk=1, key=os.urandom(32), created_at=utc_now())
                conn.execute(made.on_conflict_do_nothing(index_elements=["pk"]))  # another process may have been first
                key = conn.execute(select(audit_keys.c.key).where(audit_keys.c.pk == 1)).scalar_one()
        return bytes(key)

    def audit(self, events: Sequence[dict[str, Any]]) -> None:
        """Append events (username, role, action, target, source, outcome; ``at`` defaults to now) in one transaction."""
        if not events:
            return
        rows = [{"at": utc_now(), **event, "target": str(event.get("target", ""))[:512]} for event in events]
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(audit_events), rows)
        except SQLAlchemyError as exc:
            raise AccountError(f"audit write failed: {type(exc).__name__}") from exc

    def audit_trail(self, *, since: dt.datetime | None, username: str | None, limit: int) -> Sequence[dict[str, Any]]:
        stmt = select(audit_events).order_by(audit_events.c.pk.desc()).limit(limit)
        if since is not None:
            stmt = stmt.where(audit_events.c.at >= since)
        if username:
            stmt = stmt.where(audit_events.c.username == username)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
        for row in rows:
            row["at"] = row["at"].isoformat()
        return rows
