"""Who a study belongs to, in the identifiers the EMR knows: the index's values, or the originals from the vault.

A de-identified study (Patient Identity Removed = YES) carries pseudonyms in
the index; its original MRN, citizen ID, insurance number, accession number
and study date are read from the pseudonym vault when the gateway holds one.
Other patient IDs are told apart by their issuer (``CCCD``, ``BHYT``) or,
without one, by their shape: 12 digits for a citizen ID (CCCD), two letters
and 13 digits for an insurance card number (the pre-2021 BHYT format).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dicom_rules.dates import shift_date
from dicom_rules.vault import PATIENT, STUDY, VaultSealError
from gateway.vault import PseudonymVault
from storage.index.study_export import ExportStudy

_CITIZEN_ID = re.compile(r"\d{12}")
_INSURANCE_NUMBER = re.compile(r"[A-Z]{2}\d{13}")


class IdentityUnavailable(Exception):
    """The study's original identity cannot be known (the reason says why; it holds no patient data)."""


@dataclass(frozen=True)
class PatientIds:
    mrn: str
    issuer: str
    citizen_ids: tuple[str, ...] = ()
    insurance_numbers: tuple[str, ...] = ()
    birth_date: str = ""  # YYYYMMDD, to check a match by MRN
    sex: str = ""  # M, F, O
    name: str = ""  # DICOM PN, for ORU^R01


@dataclass(frozen=True)
class StudyIdentity:
    patient: PatientIds
    accession_number: str
    study_date: str  # YYYYMMDD as acquired, "" when not known
    date_offset_days: int = 0  # how far the index's dates were moved (pseudonymised with shifted dates)
    dates_known: bool = True

    def original_date(self, stored: str) -> str:
        """A date of the index as it was acquired ("" when that cannot be known)."""
        if not self.dates_known or not stored:
            return ""
        return (shift_date(stored, -self.date_offset_days) or "") if self.date_offset_days else stored


UNKNOWN = StudyIdentity(PatientIds("", ""), "", "", dates_known=False)


def classify(others: list[tuple[str, str]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Citizen IDs and insurance numbers among (value, issuer) pairs of Other Patient IDs."""
    citizen: list[str] = []
    insurance: list[str] = []
    for value, issuer in others:
        value, issuer = value.strip(), issuer.strip().upper()
        if not value:
            continue
        if "BHYT" in issuer or (not issuer and _INSURANCE_NUMBER.fullmatch(value)):
            insurance.append(value)
        elif "CCCD" in issuer or (not issuer and _CITIZEN_ID.fullmatch(value)):
            citizen.append(value)
    return tuple(dict.fromkeys(citizen)), tuple(dict.fromkeys(insurance))


def study_identity(study: ExportStudy, vault: PseudonymVault | None) -> StudyIdentity:
    """The identifiers to look the study's patient and order up by; raises IdentityUnavailable."""
    if not study.identity_removed:
        citizen, insurance = classify([(o.value, o.issuer) for o in study.patient.other_ids])
        return StudyIdentity(
            PatientIds(
                study.patient.patient_id, study.patient.issuer, citizen, insurance, study.patient.birth_date,
                study.patient.sex, study.patient.name,
            ),
            study.accession_number,
            study.study_date,
        )
    if vault is None:
        raise IdentityUnavailable("de-identified study and no pseudonym vault: the original patient IDs are unknown")
    try:
        patient: dict[str, Any] | None = vault.reveal(PATIENT, study.patient.patient_id)
        original_study: dict[str, Any] = vault.reveal(STUDY, study.study_uid) or {}
    except VaultSealError:
        raise IdentityUnavailable("the vault entry of this study does not open with this gateway's secret") from None
    if patient is None:
        raise IdentityUnavailable("de-identified study without a vault entry (anonymised): the patient is unknown")
    others = [(str(o.get("id", "")), str(o.get("issuer", ""))) for o in patient.get("OtherPatientIDs") or []]
    citizen, insurance = classify(others)
    offset = int(patient.get("DateOffsetDays") or 0)
    return StudyIdentity(
        PatientIds(
            str(patient.get("PatientID", "")), str(patient.get("IssuerOfPatientID", "")), citizen, insurance,
            str(patient.get("PatientBirthDate") or ""), str(patient.get("PatientSex") or ""),
            str(patient.get("PatientName") or ""),
        ),
        str(original_study.get("AccessionNumber", "")),
        str(original_study.get("StudyDate", "")) or (shift_date(study.study_date, -offset) or ""),
        offset,
    )
