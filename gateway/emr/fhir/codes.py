"""Code systems and the small code tables (``codes.toml``, with their sources) used in the FHIR resources."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from typing import Any

DCM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
URI = "urn:ietf:rfc:3986"
DICOM_UID = "urn:dicom:uid"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
ENDPOINT_CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
RADIOLOGY = "LP29684-5"


@cache
def _tables() -> dict[str, Any]:
    return tomllib.loads(resources.files(__package__).joinpath("codes.toml").read_text(encoding="utf-8"))


def modality(code: str) -> dict[str, str]:
    coding = {"system": DCM, "code": code}
    display = _tables()["modalities"].get(code)
    return {**coding, "display": display} if display else coding


def body_site(body_part: str) -> dict[str, str] | None:
    """SNOMED CT coding of a Body Part Examined value; None when the table does not know it."""
    found = _tables()["body_parts"].get(body_part.strip().upper())
    return {"system": SNOMED, "code": found[0], "display": found[1]} if found else None


def report_code(modalities: list[str] | tuple[str, ...]) -> dict[str, str]:
    """LOINC code of a report on a study of these modalities (a study of one modality gets that modality's code)."""
    table = _tables()["report_codes"]
    kinds = sorted({m for m in modalities if m not in ("SR", "KO", "PR", "SEG", "DOC")})
    code, display = table[kinds[0] if len(kinds) == 1 and kinds[0] in table else "*"]
    return {"system": LOINC, "code": code, "display": display}
