"""A radiology report signed final (the outbox payload) as a FHIR R4 DiagnosticReport."""

from __future__ import annotations

import base64
import datetime as dt
import html
import uuid
from typing import Any

from gateway.emr.fhir import codes

FINDINGS, IMPRESSION = "Mô tả (Findings)", "Kết luận (Impression)"


def report_identifier(study_uid: str) -> dict[str, str]:
    """The report's own UID, derived from its study's (one report per study): stable, so updates stay idempotent."""
    derived = uuid.uuid5(uuid.NAMESPACE_OID, f"pacs-gateway/report/{study_uid}")
    return {"system": codes.DICOM_UID, "value": f"urn:oid:2.25.{derived.int}"}


def report_query(study_uid: str) -> dict[str, str]:
    identifier = report_identifier(study_uid)
    return {"identifier": f"{identifier['system']}|{identifier['value']}"}


def _text(payload: dict[str, Any]) -> str:
    parts = []
    for title, key in ((FINDINGS, "findings"), (IMPRESSION, "impression")):
        value = str(payload.get(key) or "").strip()
        if value:
            parts.append(f"{title}:\n{value}")
    return "\n\n".join(parts)


def _narrative(payload: dict[str, Any]) -> str:
    blocks = []
    for title, key in ((FINDINGS, "findings"), (IMPRESSION, "impression")):
        value = str(payload.get(key) or "").strip()
        if value:
            lines = "<br/>".join(html.escape(line) for line in value.splitlines())
            blocks.append(f"<p><b>{html.escape(title)}</b></p><p>{lines}</p>")
    return '<div xmlns="http://www.w3.org/1999/xhtml">' + "".join(blocks) + "</div>"


def diagnostic_report(
    payload: dict[str, Any],
    *,
    patient_ref: str,
    imaging_study_ref: str,
    service_request_ref: str | None,
    effective: str | None,
) -> dict[str, Any]:
    issued = payload.get("finalized_at") or dt.datetime.now(dt.timezone.utc).isoformat()
    code = codes.report_code(payload.get("modalities") or [])
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [report_identifier(payload["study_uid"])],
        "status": "final",
        "category": [
            {
                "coding": [
                    {"system": codes.LOINC, "code": codes.RADIOLOGY, "display": "Radiology"},
                    {"system": codes.V2_0074, "code": "RAD", "display": "Radiology"},
                ]
            }
        ],
        "code": {"coding": [code], **({"text": payload["study_description"]} if payload.get("study_description") else {})},
        "subject": {"reference": patient_ref},
        "effectiveDateTime": effective or issued,
        "issued": issued,
        "imagingStudy": [{"reference": imaging_study_ref}],
    }
    if service_request_ref:
        resource["basedOn"] = [{"reference": service_request_ref}]
    reader = str(payload.get("finalized_by_name") or payload.get("finalized_by") or "").strip()
    if reader:
        resource["performer"] = [{"type": "Practitioner", "display": reader}]
        resource["resultsInterpreter"] = [{"type": "Practitioner", "display": reader}]
    impression = str(payload.get("impression") or "").strip()
    if impression:
        resource["conclusion"] = impression
    text = _text(payload)
    if text:
        resource["text"] = {"status": "generated", "div": _narrative(payload)}
        resource["presentedForm"] = [
            {
                "contentType": "text/plain; charset=utf-8",
                "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
                "title": "Radiology report",
            }
        ]
    return resource
