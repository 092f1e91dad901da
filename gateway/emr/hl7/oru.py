"""A final radiology report as an HL7 v2.5 ORU^R01 message, for EMRs that take results over MLLP.

The payload is an outbox ``diagnostic-report`` message (see
``storage.index.reports``). Segments: MSH, PID (MRN with its issuer), ORC
(RE; the accession number as filler order number), OBR (accession in
OBR-3 and OBR-18, modality in OBR-24, result status F, the signing
radiologist in OBR-32), then one FT observation each for the findings and
the impression (LOINC 18782-3 and 19005-8), line breaks as ``\\.br\\``.
Text travels in UTF-8 (MSH-18 ``UNICODE UTF-8``), delimiters escaped.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from gateway.emr.hl7.ack import hl7_timestamp
from gateway.emr.hl7.escaping import escape

FINDINGS = ("18782-3", "Radiology Study observation (narrative)")
IMPRESSION = ("19005-8", "Radiology Imaging study [Impression] (narrative)")


def _timestamp(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        return hl7_timestamp(dt.datetime.fromisoformat(iso))
    except ValueError:
        return ""


def _segment(*fields: str) -> str:
    return "|".join(fields).rstrip("|")


def build_oru_r01(payload: dict[str, Any], *, application: str, facility: str, control_id: str) -> str:
    """The ORU^R01 of a signed report (segments ended by CR), ready to send."""
    e = escape
    accession = e(str(payload.get("accession_number") or ""))
    modalities = [str(m) for m in payload.get("modalities") or []]
    signed = _timestamp(payload.get("finalized_at"))
    interpreter = "&".join([e(str(payload.get("finalized_by") or "")), e(str(payload.get("finalized_by_name") or ""))])
    description = e(str(payload.get("study_description") or "")) or "Imaging study"
    segments = [
        _segment("MSH", "^~\\&", e(application), e(facility), "", "", hl7_timestamp(), "", "ORU^R01^ORU_R01",
                 e(control_id), "P", "2.5", "", "", "", "", "", "UNICODE UTF-8"),
        _segment("PID", "1", "", f"{e(str(payload.get('patient_id') or ''))}^^^{e(str(payload.get('issuer_of_patient_id') or ''))}^MR"),
        _segment("ORC", "RE", "", accession, "", "CM"),
        _segment(
            "OBR", "1", "", accession, f"^{description}", "", "", e(str(payload.get("study_date") or "")),
            *[""] * 10, accession, "", "", "", signed, "", e(modalities[0]) if modalities else "", "F",
            *[""] * 6, interpreter,
        ),
    ]  # fmt: skip
    number = 0
    for (code, name), key in ((FINDINGS, "findings"), (IMPRESSION, "impression")):
        text = str(payload.get(key) or "").strip()
        if text:
            number += 1
            segments.append(
                _segment("OBX", str(number), "FT", f"{code}^{name}^LN", "", e(text, line_breaks=True),
                         "", "", "", "", "", "F", "", "", signed, "", e(str(payload.get("finalized_by") or "")))
            )  # fmt: skip
    return "\r".join(segments) + "\r"
