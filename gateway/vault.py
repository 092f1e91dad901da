"""Re-identification through the pseudonym vault, for administrators and (later) the EMR link."""

from __future__ import annotations

from typing import Any

from dicom_rules.vault import PATIENT, VaultCipher
from gateway.settings import Settings
from storage.index.database import IndexDatabase
from storage.index.vault import VaultTables

KINDS = ("patient", "study", "series", "instance")


class PseudonymVault:
    def __init__(self, index: IndexDatabase, secret: bytes) -> None:
        self.tables = VaultTables(index.engine)
        self.cipher = VaultCipher(secret)

    @classmethod
    def open(cls, settings: Settings, index: IndexDatabase) -> PseudonymVault | None:
        secret = settings.deid_secret()
        return cls(index, secret) if secret else None

    def patient_pseudonyms(self, patient_id: str) -> list[str]:
        """Pseudonymous patient IDs standing for this original patient ID (or citizen ID, insurance number...)."""
        return self.tables.pseudonyms_for(PATIENT, [self.cipher.digest("patient-id", patient_id)])

    def reveal(self, kind: str, pseudonym: str) -> dict[str, Any] | None:
        entry = self.tables.entry(kind, pseudonym)
        return None if entry is None else self.cipher.open(entry)
