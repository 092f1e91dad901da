"""A study's identity for the EMR: the index's values for an identified study; the originals from the vault for a
pseudonymised one (dates shifted back); no identity for an anonymised one or without a vault."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_rules.rules import parse_rules
from gateway.emr.identity import UNKNOWN, IdentityUnavailable, PatientIds, StudyIdentity, classify, study_identity
from gateway.ingest.rules_stage import RulesStage
from gateway.vault import PseudonymVault
from storage.index.study_export import read_study
from tests.factory import CITIZEN_ID, INSURANCE_NUMBER, Patient, ct_series, to_bytes
from tests.storage.conftest import records

SECRET = "identity-test-secret-0123456789abcdef0123"
RULES = """
[defaults]
mode = "pseudonymised"

[[rule]]
name = "research"
calling_ae = "RESEARCH"
mode = "anonymised"
"""


def test_other_ids_by_issuer_or_shape() -> None:
    citizen, insurance = classify([
        ("079203001234", "CCCD"), ("DN4797912345678", "BHYT"), ("079203009999", ""), ("HS4010000000001", ""),
        ("079203005555", "BHYT"),  # since 2025 the insurance number may be the citizen ID: the issuer says which
        ("MRN-77", "BV-BACHMAI"), ("", "CCCD"), ("079203001234", "CCCD"),
        ("012345678901", "BV-XYZ"),  # another hospital's 12-digit MRN: not a citizen ID
    ])  # fmt: skip
    assert citizen == ("079203001234", "079203009999")
    assert insurance == ("DN4797912345678", "HS4010000000001", "079203005555")


def test_identified_study_uses_the_index(sqlite_index) -> None:
    series = ct_series(1, size=16, patient=Patient(patient_id="MRN-ID1"), accession="ACC-ID1")
    sqlite_index.commit(records(series))
    identity = study_identity(read_study(sqlite_index.engine, series[0].StudyInstanceUID), None)
    assert identity.patient.mrn == "MRN-ID1" and identity.patient.issuer == "BV-CHORAY"
    assert (identity.patient.citizen_ids, identity.patient.insurance_numbers) == ((CITIZEN_ID,), (INSURANCE_NUMBER,))
    assert (identity.accession_number, identity.study_date, identity.date_offset_days) == ("ACC-ID1", "20240315", 0)
    assert identity.original_date("20240301") == "20240301"


def test_pseudonymised_study_reads_the_originals_from_the_vault(sqlite_index, tmp_path: Path) -> None:
    stage = RulesStage(parse_rules(RULES), secret=SECRET.encode(), quarantine_dir=tmp_path / "q")
    series = ct_series(2, size=16, patient=Patient(patient_id="MRN-PS1"), accession="ACC-PS1")
    received = [stage.receive(to_bytes(ds), source_ae="CT1") for ds in series]
    sqlite_index.commit([r.record for r in received], [e for r in received for e in r.vault])
    study = read_study(sqlite_index.engine, received[0].record.study_uid)
    assert study.identity_removed and study.patient.patient_id.startswith("PGW")
    assert study.accession_number != "ACC-PS1" and study.study_date != "20240315"  # pseudonym, shifted date

    with pytest.raises(IdentityUnavailable, match="no pseudonym vault"):
        study_identity(study, None)
    vault = PseudonymVault(sqlite_index, SECRET.encode())
    identity = study_identity(study, vault)
    assert (identity.patient.mrn, identity.patient.issuer) == ("MRN-PS1", "BV-CHORAY")
    assert (identity.patient.citizen_ids, identity.patient.insurance_numbers) == ((CITIZEN_ID,), (INSURANCE_NUMBER,))
    assert (identity.accession_number, identity.study_date) == ("ACC-PS1", "20240315")
    assert identity.date_offset_days < 0 and identity.original_date(study.study_date) == "20240315"

    other_secret = PseudonymVault(sqlite_index, b"another-secret-0123456789abcdef0123456789")
    with pytest.raises(IdentityUnavailable, match="does not open"):
        study_identity(study, other_secret)

    anonymised = stage.receive(to_bytes(ct_series(1, size=16)[0]), source_ae="RESEARCH")
    sqlite_index.commit([anonymised.record], list(anonymised.vault))
    with pytest.raises(IdentityUnavailable, match="anonymised"):
        study_identity(read_study(sqlite_index.engine, anonymised.record.study_uid), vault)


def test_unknown_dates_stay_unknown() -> None:
    assert UNKNOWN.original_date("20240101") == ""
    shifted = StudyIdentity(PatientIds("M", ""), "A", "20240315", date_offset_days=-10)
    assert shifted.original_date("20240305") == "20240315" and shifted.original_date("") == ""
