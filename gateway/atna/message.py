"""One audit event of the gateway's trail as a DICOM Audit Message (PS3.15 A.5, the schema of A.5.1).

The message says what the index's trail says and no more: it is built from the
event as recorded (``gateway.audit``), whose target already keeps in clear only
what cannot be anyone's data (``gateway.audit_redaction``). So a patient stands
in it as the pseudonymous patient ID the gateway stores (``PGW...``), or as the
trail's keyed digest of whatever ID was typed (``hmac:...``, found again with
``pacs-gateway user audit-digest``); the gateway never re-identifies to audit.
Study Instance UIDs are kept in clear, as the trail keeps them.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from gateway.atna import codes
from gateway.atna.codes import Code

_STUDY_IN_PATH = re.compile(r"/studies/([0-9.]{1,64})(?=/|\?|$| )")
_STUDY_IN_QUERY = re.compile(r"(?:^|[&? ])(?:StudyInstanceUID|0020000D|studyUID)=([0-9.\\,]{1,640})")
_PATIENT_IN_QUERY = re.compile(r"(?:^|[&? ])(?:PatientID|00100020)=(PGW[A-Z2-7]{17}|hmac:[0-9a-f]{24})")
_PATIENT_IN_PATH = re.compile(r"^/vault/patient/(PGW[A-Z2-7]{17})$")
_UID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")


@dataclass(frozen=True)
class AuditSource:
    """Who reports: AuditSourceIdentification, and the gateway as the active participant that is not the requester."""

    source_id: str  # AuditSourceID: the gateway's name in the repository
    enterprise_site_id: str  # AuditEnterpriseSiteID, empty: none
    host: str  # the gateway's network access point (its host name)
    process: str  # which of the gateway's processes (gateway, worker-0, hl7...)
    ae_title: str


def outcome_indicator(role: str, outcome: int) -> str:
    """EventOutcomeIndicator: 0 success, 4 minor failure (refused, not found, a bad request), 8 serious failure."""
    if role == "dicom":  # a DIMSE status
        return "0" if outcome == 0 else ("0" if 0xFF00 <= outcome <= 0xFF01 else "4")
    if role == "hl7":
        return "0" if outcome == 0 else "4"
    if outcome < 400:
        return "0"
    return "4" if outcome < 500 else "8"


def _coded(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code.code, "codeSystemName": code.scheme, "originalText": code.meaning})


def _access_point(address: str) -> tuple[str, str] | None:
    """NetworkAccessPointID and its type code (2: an IP address, 1: a host name) of a recorded source."""
    if not address:
        return None
    try:
        ipaddress.ip_address(address)
        return address, "2"
    except ValueError:
        return (address, "1") if " " not in address else None


def _token(text: str, limit: int = 512) -> str:
    return " ".join(str(text).split())[:limit] or "-"


def _time(at: Any) -> str:
    when = at if isinstance(at, dt.datetime) else dt.datetime.fromisoformat(str(at))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.isoformat(timespec="milliseconds")


def studies(target: str) -> list[str]:
    found = _STUDY_IN_PATH.findall(target)
    for listed in _STUDY_IN_QUERY.findall(target):
        found.extend(re.split(r"[\\,]", listed))
    seen: dict[str, None] = {}
    for uid in found:
        if _UID.fullmatch(uid) and len(uid) <= 64:
            seen.setdefault(uid, None)
    return list(seen)


def patients(target: str) -> list[str]:
    path = target.split("?", 1)[0]
    found = _PATIENT_IN_QUERY.findall(target) + _PATIENT_IN_PATH.findall(path)
    return list(dict.fromkeys(found))


def audit_message(event: dict[str, Any], source: AuditSource) -> bytes:
    """The DICOM Audit Message of one recorded event (username, role, action, target, source, outcome, at)."""
    action = str(event.get("action", ""))
    kind = codes.EVENTS.get(action, codes.UNKNOWN)
    role, target = str(event.get("role", "")), str(event.get("target", ""))
    outcome = int(event.get("outcome", 0) or 0)
    root = ET.Element("AuditMessage")

    ident = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": kind.action_code, "EventDateTime": _time(event["at"]),
        "EventOutcomeIndicator": outcome_indicator(role, outcome),
    })  # fmt: skip
    _coded(ident, "EventID", kind.event_id)
    if kind.type_code is not None:
        _coded(ident, "EventTypeCode", kind.type_code)
    if outcome_indicator(role, outcome) != "0" or action not in codes.EVENTS:
        ET.SubElement(ident, "EventOutcomeDescription").text = f"{action} outcome {outcome}"

    requester = {"UserID": str(event.get("username", "")) or "-", "UserIsRequestor": "true"}
    if role:
        requester["AlternativeUserID"] = f"role={role}"
    point = _access_point(str(event.get("source", "")))
    if point is not None:
        requester["NetworkAccessPointID"], requester["NetworkAccessPointTypeCode"] = point
    person = ET.SubElement(root, "ActiveParticipant", requester)
    if kind.requester_role is not None:
        _coded(person, "RoleIDCode", kind.requester_role)
    gateway = ET.SubElement(root, "ActiveParticipant", {
        "UserID": source.ae_title, "AlternativeUserID": source.process, "UserIsRequestor": "false",
        "NetworkAccessPointID": source.host, "NetworkAccessPointTypeCode": "1",
    })  # fmt: skip
    _coded(gateway, "RoleIDCode", codes.APPLICATION if kind.requester_role is None else (
        codes.SOURCE if kind.requester_role is codes.DESTINATION else codes.DESTINATION))

    audit_source = {"AuditSourceID": source.source_id}
    if source.enterprise_site_id:
        audit_source["AuditEnterpriseSiteID"] = source.enterprise_site_id
    ET.SubElement(ET.SubElement(root, "AuditSourceIdentification", audit_source), "AuditSourceTypeCode", {"csd-code": "4"})

    for uid in studies(target):  # a system object (2) in the report role (3)
        _named_participant(root, uid, "2", "3", codes.STUDY_INSTANCE_UID)
    for patient_id in patients(target):  # a person (1) as the patient (1)
        _named_participant(root, patient_id, "1", "1", codes.PATIENT_NUMBER)
    if target:  # the request itself, as the trail keeps it: for a query its parameters (A.5.3.10), else the resource
        query = kind.event_id is codes.QUERY
        request = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": _token(target.split("?", 1)[0].split(" ", 1)[0], 256),
            "ParticipantObjectTypeCode": "2", "ParticipantObjectTypeCodeRole": "24" if query else "4",
        })  # fmt: skip
        _coded(request, "ParticipantObjectIDTypeCode", codes.URI)
        if query:
            ET.SubElement(request, "ParticipantObjectQuery").text = base64.b64encode(target.encode()).decode()
        else:
            ET.SubElement(request, "ParticipantObjectName").text = _token(action, 64)
        ET.SubElement(request, "ParticipantObjectDetail", {"type": "target", "value": base64.b64encode(target.encode()).decode()})
    return ET.tostring(root, encoding="utf-8", xml_declaration=False)


def _named_participant(root: ET.Element, ident: str, type_code: str, role: str, id_type: codes.Code) -> None:
    """A ParticipantObjectIdentification whose ID is also its name (a study UID, a patient number)."""
    element = ET.SubElement(root, "ParticipantObjectIdentification", {
        "ParticipantObjectID": ident, "ParticipantObjectTypeCode": type_code, "ParticipantObjectTypeCodeRole": role,
    })  # fmt: skip
    _coded(element, "ParticipantObjectIDTypeCode", id_type)
    ET.SubElement(element, "ParticipantObjectName").text = ident
