"""The second factor of local accounts: TOTP (RFC 6238) with recovery codes, as the login needs it.

A code is the RFC 6238 default that authenticator apps expect: six digits, HMAC-SHA1, 30-second steps. One step of
clock drift either way is accepted, and each step only once (``storage.index.second_factor`` keeps the last step
taken), so a code seen over a shoulder or in a proxy's log is worthless once used. Secrets are sealed with AES-GCM
(bound to their account), under a key derived with HKDF from the de-identification secret as the pseudonym vault's
is; without that secret, under 32 random bytes kept in the index (``SecondFactorStore.local_key``), which protects
nothing against whoever holds a copy of the index: set ``deid.secret`` where that matters. A secret sealed under
another key (the secret was changed) does not open: the login is refused until an administrator resets the
account's second factor (``pacs-gateway user reset-totp NAME``). Recovery codes are kept as SHA-256 digests
(80 random bits each, so a digest cannot be searched backwards), each good once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from enum import Enum

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine

from dicom_rules.pseudonyms import derive
from storage.index.accounts import User
from storage.index.second_factor import SealedFactor, SecondFactorStore

log = logging.getLogger(__name__)

STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1  # steps either side of the server's clock
RECOVERY_CODES = 10
_CODE = re.compile(r"\d{%d}" % DIGITS)


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step (within the drift allowed around ``now``) whose code ``code`` is, or None."""
    code = code.strip().replace(" ", "")
    if not _CODE.fullmatch(code):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = int(now // STEP_SECONDS)
    found = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):  # every candidate compared: no early exit
        if hmac.compare_digest(totp.generate_otp(step), code) and found is None:
            found = step
    return found


def new_recovery_codes() -> tuple[str, ...]:
    """Ten codes of 80 random bits, written as four groups of four (base32, lower case)."""
    made = []
    for _ in range(RECOVERY_CODES):
        text = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
        made.append("-".join(text[i : i + 4] for i in range(0, 16, 4)))
    return tuple(made)


def recovery_digest(user_pk: int, code: str) -> str:
    """How a recovery code is kept: case, spaces and dashes aside, bound to its account."""
    normal = re.sub(r"[\s-]", "", code).lower()
    return hashlib.sha256(f"{user_pk}\x00{normal}".encode()).hexdigest()


class UnreadableFactor(Exception):
    """A sealed secret this gateway's key does not open."""


class Sealer:
    """AES-GCM over TOTP secrets, each bound to its account by the associated data."""

    def __init__(self, key: bytes, key_id: str) -> None:
        self._aead = AESGCM(key)
        self.key_id = key_id

    @classmethod
    def for_secret(cls, secret: bytes) -> Sealer:
        return cls(derive(secret, "totp/encryption"), derive(secret, "totp/key-id", 8).hex())

    @classmethod
    def for_local_key(cls, key: bytes) -> Sealer:
        return cls(derive(key, "totp/encryption"), "local-" + hashlib.sha256(key).hexdigest()[:10])

    def seal(self, user_pk: int, secret: str) -> tuple[bytes, bytes]:
        nonce = os.urandom(12)
        return nonce, self._aead.encrypt(nonce, secret.encode("ascii"), f"totp\x00{user_pk}".encode())

    def open(self, factor: SealedFactor) -> str:
        if factor.key_id != self.key_id:
            raise UnreadableFactor(f"sealed under key {factor.key_id}, this gateway holds {self.key_id}")
        try:
            return self._aead.decrypt(factor.nonce, factor.ciphertext, f"totp\x00{factor.user_pk}".encode()).decode("ascii")
        except InvalidTag:
            raise UnreadableFactor("altered, or sealed under another key") from None


class Verdict(str, Enum):
    NOT_NEEDED = "not-needed"
    PASSED = "passed"  # a code of a confirmed secret
    CONFIRMED = "confirmed"  # the first code of a pending secret: enrolled
    RECOVERY_USED = "recovery-used"
    CODE_NEEDED = "code-needed"  # enrolled, no code sent
    ENROL = "enrol"  # not enrolled (or pending), no code sent
    WRONG_CODE = "wrong-code"
    REPLAYED = "replayed"  # a right code of a step already taken
    WRONG_RECOVERY = "wrong-recovery-code"
    UNREADABLE = "unreadable"

    @property
    def admits(self) -> bool:
        return self in (Verdict.NOT_NEEDED, Verdict.PASSED, Verdict.CONFIRMED, Verdict.RECOVERY_USED)


@dataclass(frozen=True)
class Enrolment:
    """What an authenticator app is given: the secret (base32) and its otpauth:// URI."""

    secret: str
    uri: str
    issuer: str
    account: str


@dataclass(frozen=True)
class Check:
    verdict: Verdict
    enrolment: Enrolment | None = None  # ENROL, and a wrong first code
    recovery_codes: tuple[str, ...] = field(default=(), repr=False)  # CONFIRMED: shown once
    recovery_codes_left: int | None = None  # RECOVERY_USED


class SecondFactor:
    """Checks and enrols local accounts' TOTP; synchronous (index work): call it off the event loop."""

    def __init__(self, engine: Engine, *, secret: bytes | None, issuer: str) -> None:
        self.store = SecondFactorStore(engine)
        self.issuer = issuer
        self._secret = secret
        self._sealer: Sealer | None = None
        self._warned = False

    @property
    def sealer(self) -> Sealer:
        if self._sealer is None:
            self._sealer = Sealer.for_secret(self._secret) if self._secret else Sealer.for_local_key(self.store.local_key())
        return self._sealer

    def enrolment(self, user: User, secret: str) -> Enrolment:
        uri = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(name=user.username, issuer_name=self.issuer)
        return Enrolment(secret, uri, self.issuer, user.username)

    def _pending(self, user: User) -> tuple[SealedFactor, str]:
        factor = self.store.factor(user.pk)
        if factor is None:
            if self._secret is None and not self._warned:
                self._warned = True
                log.warning("TOTP secrets are sealed under a key kept in the index: set deid.secret to keep them from "
                            "whoever holds a copy of the index")  # fmt: skip
            nonce, sealed = self.sealer.seal(user.pk, pyotp.random_base32())
            factor = self.store.begin(user.pk, self.sealer.key_id, nonce, sealed)
        return factor, self.sealer.open(factor)

    def check(self, user: User, *, code: str = "", recovery_code: str = "", now: float | None = None) -> Check:
        """The second step of a login whose password was right (see Verdict)."""
        now = time.time() if now is None else now
        try:
            factor = self.store.factor(user.pk)
            if factor is None or not factor.confirmed:
                factor, secret = self._pending(user)
                step = matching_step(secret, code, now) if code else None
                if step is None:
                    return Check(Verdict.WRONG_CODE if code or recovery_code else Verdict.ENROL, self.enrolment(user, secret))
                codes = new_recovery_codes()
                if not self.store.confirm(user.pk, step, [recovery_digest(user.pk, c) for c in codes]):
                    return Check(Verdict.REPLAYED)  # confirmed by a concurrent login meanwhile
                return Check(Verdict.CONFIRMED, recovery_codes=codes)
            if recovery_code:
                if not self.store.use_recovery_code(user.pk, recovery_digest(user.pk, recovery_code)):
                    return Check(Verdict.WRONG_RECOVERY)
                return Check(Verdict.RECOVERY_USED, recovery_codes_left=self.store.recovery_codes_left(user.pk))
            if not code:
                return Check(Verdict.CODE_NEEDED)
            step = matching_step(self.sealer.open(factor), code, now)
            if step is None:
                return Check(Verdict.WRONG_CODE)
            return Check(Verdict.PASSED if self.store.take_step(user.pk, step) else Verdict.REPLAYED)
        except UnreadableFactor as exc:
            log.error("the second factor of a local account does not open (%s): reset it with pacs-gateway user reset-totp", exc)
            return Check(Verdict.UNREADABLE)

    def reset(self, user: User) -> bool:
        return self.store.reset(user.pk)
