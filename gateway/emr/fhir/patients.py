"""Finding a study's Patient in the EMR by identifier: hospital MRN, then citizen ID, then insurance number.

Exactly one Patient carrying an identifier links the study; none for every
identifier, or several for one, does not: the study goes to reconciliation.
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


async def match_patient(client: FhirClient, ids: PatientIds, systems: IdentifierSystems) -> Match:
    tried: list[dict[str, Any]] = []
    searched = candidates(ids, systems)
    for kind, system, value in searched:
        found = await client.search("Patient", {"identifier": f"{system}|{value}"})
        tried.append({"identifier": kind, "system": system, "matches": len(found) if len(found) < 2 else "several"})
        if len(found) == 1:
            return Match(f"Patient/{found[0]['id']}", tried=tried)
        if len(found) > 1:
            return Match(None, f"several EMR patients carry the study's {_NAMES[kind]}", tried)
    if not searched:
        return Match(None, "the study's patient has no identifier the EMR link can search by", tried)
    return Match(None, "no EMR patient carries the study's MRN, citizen ID or insurance number", tried)
