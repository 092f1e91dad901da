"""Finding a study's Patient in the EMR by identifier: hospital MRN, then citizen ID, then insurance number.

Exactly one Patient carrying an identifier links the study; none for every
identifier, or several for one, does not: the study goes to reconciliation.
So does a Patient found by MRN whose birth date or sex contradicts the
study's (an MRN typed wrong at the modality, or another hospital's).
Patients are never created here. What was tried is reported as identifier
kind, system and number of matches, never the values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.emr.fhir.client import FhirClient
from gateway.emr.identity import PatientIds

MRN, CITIZEN_ID, INSURANCE = "mrn", "citizen-id", "insurance-number"
_NAMES = {MRN: "MRN", CITIZEN_ID: "citizen ID", INSURANCE: "insurance number"}


@dataclass(frozen=True)
class IdentifierSystems:
    mrn: dict[str, str]  # issuer of patient ID -> system; "*" for any other issuer
    citizen_id: str
    insurance_number: str


@dataclass(frozen=True)
class Match:
    patient_ref: str | None
    reason: str = ""
    tried: list[dict[str, Any]] = field(default_factory=list)


def candidates(ids: PatientIds, systems: IdentifierSystems) -> list[tuple[str, str, str]]:
    """(kind, system, value) to search by, in order."""
    out = []
    mrn_system = systems.mrn.get(ids.issuer.strip()) or systems.mrn.get("*")
    if ids.mrn and mrn_system:
        out.append((MRN, mrn_system, ids.mrn))
    if systems.citizen_id:
        out.extend((CITIZEN_ID, systems.citizen_id, value) for value in ids.citizen_ids)
    if systems.insurance_number:
        out.extend((INSURANCE, systems.insurance_number, value) for value in ids.insurance_numbers)
    return out


_GENDERS = {"M": "male", "F": "female", "O": "other"}


def _differs(patient: dict[str, Any], ids: PatientIds) -> str:
    """What of the study's birth date and sex the EMR's Patient contradicts ("" when nothing; a value missing
    on either side contradicts nothing)."""
    birth = str(patient.get("birthDate") or "").replace("-", "")
    gender = str(patient.get("gender") or "")
    wrong = []
    if len(birth) == 8 and len(ids.birth_date) == 8 and birth != ids.birth_date:
        wrong.append("birth date")
    if ids.sex in _GENDERS and gender in _GENDERS.values() and _GENDERS[ids.sex] != gender:
        wrong.append("sex")
    return " and ".join(wrong)


async def match_patient(client: FhirClient, ids: PatientIds, systems: IdentifierSystems) -> Match:
    tried: list[dict[str, Any]] = []
    searched = candidates(ids, systems)
    for kind, system, value in searched:
        found = await client.search("Patient", {"identifier": f"{system}|{value}"})
        tried.append({"identifier": kind, "system": system, "matches": len(found) if len(found) < 2 else "several"})
        if len(found) == 1:
            if kind == MRN and (differs := _differs(found[0], ids)):
                # An MRN typed wrong at the modality, or another hospital's: a wrong record is worse than none.
                tried[-1]["differs"] = differs
                return Match(None, f"the EMR patient with the study's MRN has another {differs}", tried)
            return Match(f"Patient/{found[0]['id']}", tried=tried)
        if len(found) > 1:
            return Match(None, f"several EMR patients carry the study's {_NAMES[kind]}", tried)
    if not searched:
        return Match(None, "the study's patient has no identifier the EMR link can search by", tried)
    return Match(None, "no EMR patient carries the study's MRN, citizen ID or insurance number", tried)
