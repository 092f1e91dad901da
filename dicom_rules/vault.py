"""Sealing what pseudonyms stand for: AES-GCM under a key derived from the gateway secret.

Each entry's ciphertext is bound to its kind and pseudonym (associated data),
so a row copied onto another pseudonym does not open. Lookup digests are
keyed HMACs of the original values; without the secret they reveal nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dicom_rules.engine import OriginalIdentity
from dicom_rules.pseudonyms import derive
from storage.index.records import VaultEntry

PATIENT, STUDY, SERIES, INSTANCE = "patient", "study", "series", "instance"


class VaultSealError(ValueError):
    """An entry that does not open: another key, or altered data."""


class VaultCipher:
    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(derive(secret, "vault/encryption"))
        self._lookup = derive(secret, "vault/lookup")
        self.key_id = derive(secret, "vault/key-id", 8).hex()

    def digest(self, kind: str, value: str) -> str:
        return hmac.new(self._lookup, f"{kind}\x00{value.strip()}".encode(), hashlib.sha256).hexdigest()

    def seal(self, kind: str, pseudonym: str, original: dict[str, Any], lookups: list[tuple[str, str]]) -> VaultEntry:
        nonce = os.urandom(12)
        plaintext = json.dumps(original, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        ciphertext = self._aead.encrypt(nonce, plaintext, f"{kind}\x00{pseudonym}".encode())
        digests = tuple(sorted({self.digest(k, v) for k, v in lookups if v}))
        return VaultEntry(kind, pseudonym, self.key_id, nonce, ciphertext, digests)

    def open(self, entry: VaultEntry) -> dict[str, Any]:
        if entry.key_id != self.key_id:
            raise VaultSealError(f"vault entry sealed with key {entry.key_id}, this gateway holds {self.key_id}")
        try:
            plaintext = self._aead.decrypt(entry.nonce, entry.ciphertext, f"{entry.kind}\x00{entry.pseudonym}".encode())
        except InvalidTag:
            raise VaultSealError("vault entry does not open: altered, or sealed with another key") from None
        return json.loads(plaintext)

    def entries_for(self, identity: OriginalIdentity, *, patient: str, study: str, series: str, instance: str) -> list[VaultEntry]:
        """The four entries linking one de-identified instance's pseudonyms to the originals."""
        patient_lookups = [("patient-id", identity.patient_id)] + [("patient-id", o["id"]) for o in identity.other_patient_ids]
        return [
            self.seal(
                PATIENT,
                patient,
                {
                    "PatientID": identity.patient_id,
                    "IssuerOfPatientID": identity.issuer_of_patient_id,
                    "PatientName": identity.patient_name,
                    "PatientBirthDate": identity.patient_birth_date,
                    "PatientSex": identity.patient_sex,
                    "OtherPatientIDs": identity.other_patient_ids,
                    "DateOffsetDays": identity.date_offset_days,
                },
                patient_lookups,
            ),
            self.seal(
                STUDY,
                study,
                {
                    "StudyInstanceUID": identity.study_uid,
                    "AccessionNumber": identity.accession_number,
                    "StudyDate": identity.study_date,
                    "StudyID": identity.study_id,
                    "PatientPseudonym": patient,
                },
                [("accession", identity.accession_number), ("study-uid", identity.study_uid)],
            ),
            self.seal(SERIES, series, {"SeriesInstanceUID": identity.series_uid}, [("series-uid", identity.series_uid)]),
            self.seal(INSTANCE, instance, {"SOPInstanceUID": identity.sop_instance_uid}, [("sop-uid", identity.sop_instance_uid)]),
        ]
