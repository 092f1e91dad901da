"""A final radiology report as an HL7 v2.5 ORU^R01 message, for EMRs that take results over MLLP.

The payload is an outbox ``diagnostic-report`` message (see
``storage.index.reports``), with the patient and order numbers as they are at
delivery. Segments: MSH, PID (MRN with its issuer, name), ORC (RE; the
order's placer number, its filler number else the accession number), OBR
(the same numbers, accession in OBR-18, the diagnostic service section of
HL7 table 0074 in OBR-24, result status F, the signing radiologist in
OBR-32), then one FT observation each for the findings and the impression
(LOINC 18782-3 and 19005-8), line breaks as ``\\.br\\``.
Text travels in UTF-8 (MSH-18 ``UNICODE UTF-8``), delimiters escaped.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from gateway.emr.hl7.ack import hl7_timestamp
from gateway.emr.hl7.escaping import escape

# DICOM modality -> HL7 table 0074 (diagnostic service section ID); anything else is RAD (radiology).
SERVICE_SECTIONS = {"CT": "CT", "MR": "NMR", "US": "RUS", "CR": "RX", "DX": "RX", "MG": "RX", "RF": "RX", "XA": "XRC",
                    "NM": "NMS", "PT": "NMS"}  # fmt: skip
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


def person_name(dicom_name: str) -> str:
    """A DICOM PN (family^given^middle^prefix^suffix, its first group) as an HL7 XPN (family^given^middle^suffix^prefix)."""
    family, given, middle, prefix, suffix = ([*dicom_name.split("=", 1)[0].split("^"), "", "", "", "", ""])[:5]
    return "^".join(escape(part) for part in (family, given, middle, suffix, prefix)).rstrip("^")


def build_oru_r01(payload: dict[str, Any], *, application: str, facility: str, control_id: str) -> str:
    """The ORU^R01 of a signed report (segments ended by CR), ready to send."""
    e = escape
    accession = e(str(payload.get("accession_number") or ""))
    placer = e(str(payload.get("placer_order_number") or ""))
    filler = e(str(payload.get("filler_order_number") or "")) or accession
    modalities = [str(m) for m in payload.get("modalities") or []]
    section = SERVICE_SECTIONS.get(modalities[0], "RAD") if modalities else "RAD"
    signed = _timestamp(payload.get("finalized_at"))
    interpreter = "&".join([e(str(payload.get("finalized_by") or "")), e(str(payload.get("finalized_by_name") or ""))])
    description = e(str(payload.get("study_description") or "")) or "Imaging study"
    segments = [
        _segment("MSH", "^~\\&", e(application), e(facility), "", "", hl7_timestamp(), "", "ORU^R01^ORU_R01",
                 e(control_id), "P", "2.5", "", "", "", "", "", "UNICODE UTF-8"),
        _segment("PID", "1", "", f"{e(str(payload.get('patient_id') or ''))}^^^{e(str(payload.get('issuer_of_patient_id') or ''))}^MR",
                 "", person_name(str(payload.get("patient_name") or ""))),
        _segment("ORC", "RE", placer, filler, "", "CM"),
        _segment(
            "OBR", "1", placer, filler, f"^{description}", "", "", e(str(payload.get("study_date") or "")),
            *[""] * 10, accession, "", "", "", signed, "", section, "F",
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
