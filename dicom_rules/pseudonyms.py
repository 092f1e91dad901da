"""Keyed, deterministic pseudonyms: UIDs, patient IDs, accession numbers, hashed values and date offsets.

Every pseudonym is an HMAC-SHA-256 of the original under a key derived
(HKDF) from the gateway's secret, so the same original maps to the same
pseudonym on every node and after every restart, and nobody without the
secret can compute or reverse it. Each mode derives its own keys: studies
anonymised for research do not share pseudonyms with the pseudonymised
archive.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MIN_SECRET_BYTES = 32


def derive(secret: bytes, purpose: str, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode()).derive(secret)


def _b32(digest: bytes, length: int) -> str:
    return base64.b32encode(digest).decode("ascii").rstrip("=")[:length]


class PseudonymKey:
    """Pseudonym functions for one mode, derived from the gateway secret."""

    def __init__(self, secret: bytes, *, namespace: str, date_shift_max_days: int = 365) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the de-identification secret must be at least {MIN_SECRET_BYTES} bytes")
        if date_shift_max_days < 1:
            raise ValueError("date_shift_max_days must be at least 1")
        self._uid = derive(secret, f"{namespace}/uid")
        self._ident = derive(secret, f"{namespace}/identifier")
        self._date = derive(secret, f"{namespace}/date-shift")
        self.date_shift_max_days = date_shift_max_days
        self._uids: dict[str, str] = {}

    def _mac(self, key: bytes, *parts: str) -> bytes:
        return hmac.new(key, "\x00".join(parts).encode("utf-8"), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """A UID under the 2.25 root (an integer of 128 bits, as for UUID-derived UIDs)."""
        found = self._uids.get(original)
        if found is None:
            found = "2.25." + str(int.from_bytes(self._mac(self._uid, original)[:16], "big"))
            if len(self._uids) > 100_000:
                self._uids.clear()
            self._uids[original] = found
        return found

    def patient_id(self, patient_id: str, issuer: str = "") -> str:
        return "PGW" + _b32(self._mac(self._ident, "patient", issuer, patient_id), 17)

    def accession(self, accession: str) -> str:
        return "A" + _b32(self._mac(self._ident, "accession", accession), 15)

    def hashed(self, value: str, max_length: int = 16) -> str:
        """A keyed hash of any value, as text of at most ``max_length`` characters."""
        return _b32(self._mac(self._ident, "value", value), max(1, min(max_length, 52)))

    def date_offset_days(self, patient_id: str, issuer: str = "") -> int:
        """Days every date of this patient moves back: the same for all of the patient's studies."""
        value = int.from_bytes(self._mac(self._date, issuer, patient_id)[:8], "big")
        return -(1 + value % self.date_shift_max_days)
