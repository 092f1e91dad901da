"""Sealing vault entries and finding them again in the index database."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dicom_rules.engine import OriginalIdentity
from dicom_rules.vault import PATIENT, STUDY, VaultCipher, VaultSealError
from storage.index.database import IndexDatabase
from storage.index.vault import VaultTables

SECRET = b"vault-test-secret-0123456789abcdef012345"
IDENTITY = OriginalIdentity(
    patient_id="MRN-0001",
    issuer_of_patient_id="BV-A",
    patient_name="NGUYỄN^THỊ PHI",
    patient_birth_date="19600415",
    patient_sex="F",
    other_patient_ids=[{"id": "079123456789", "issuer": "CCCD", "type": "TEXT"}],
    accession_number="ACC-1",
    study_uid="1.2.3.4",
    series_uid="1.2.3.4.5",
    sop_instance_uid="1.2.3.4.5.6",
)


def test_entries_open_only_with_the_same_key_and_row() -> None:
    cipher = VaultCipher(SECRET)
    entries = cipher.entries_for(IDENTITY, patient="PGWX", study="2.25.1", series="2.25.2", instance="2.25.3")
    assert [e.kind for e in entries] == ["patient", "study", "series", "instance"]
    patient = entries[0]
    assert b"MRN-0001" not in patient.ciphertext and "NGUY" not in str(patient.to_dict())
    assert cipher.open(patient)["PatientName"] == "NGUYỄN^THỊ PHI"
    with pytest.raises(VaultSealError):
        VaultCipher(SECRET + b"x").open(patient)
    with pytest.raises(VaultSealError):
        cipher.open(replace(patient, pseudonym="PGWY"))  # bound to its own pseudonym
    tampered = bytearray(patient.ciphertext)
    tampered[0] ^= 1
    with pytest.raises(VaultSealError):
        cipher.open(replace(patient, ciphertext=bytes(tampered)))


def test_index_keeps_entries_once_and_finds_them_by_any_patient_id(tmp_path: Path) -> None:
    index = IndexDatabase.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
    cipher = VaultCipher(SECRET)
    entries = cipher.entries_for(IDENTITY, patient="PGWX", study="2.25.1", series="2.25.2", instance="2.25.3")
    index.commit([], entries)
    index.commit([], cipher.entries_for(IDENTITY, patient="PGWX", study="2.25.1", series="2.25.2", instance="2.25.9"))
    tables = VaultTables(index.engine)
    assert tables.count() == 5
    for original in ("MRN-0001", "079123456789"):
        assert tables.pseudonyms_for(PATIENT, [cipher.digest("patient-id", original)]) == ["PGWX"]
    assert tables.pseudonyms_for(STUDY, [cipher.digest("accession", "ACC-1")]) == ["2.25.1"]
    assert tables.pseudonyms_for(PATIENT, [VaultCipher(SECRET + b"x").digest("patient-id", "MRN-0001")]) == []
    entry = tables.entry(STUDY, "2.25.1")
    assert entry is not None and cipher.open(entry)["AccessionNumber"] == "ACC-1"
    index.close()
