"""The codes the gateway's audit messages use, and which audit event (``action``) becomes which message.

Sources (DICOM, as in the 2024 editions; these codes have not changed since they were defined):

- PS3.16 CID 400 *Audit Event ID* (DCM 110100-110114), CID 401 *Audit Event Type Code* (DCM 110120-110139),
  CID 402 *Audit Active Participant Role ID Code* (DCM 110150-110155) and CID 404 *Audit Participant Object ID
  Type Code* (DCM 110180-110181);
- PS3.15 A.5.3 *DICOM Specific Audit Messages* for which message an event is, its EventActionCode and its
  participant objects; RFC 3881 5.5.4 for the Participant Object ID Type Codes 2 (patient number) and 12 (URI),
  written with codeSystemName ``RFC-3881`` as PS3.15 A.5.3 does.

The mapping of the gateway's own actions onto those messages is the gateway's choice; it is listed in the README
(*Audit trail and IHE ATNA*).
"""

from __future__ import annotations

from typing import NamedTuple


class Code(NamedTuple):
    code: str
    scheme: str
    meaning: str


def _dcm(code: str, meaning: str) -> Code:
    return Code(code, "DCM", meaning)


# CID 400
AUDIT_LOG_USED = _dcm("110101", "Audit Log Used")
INSTANCES_ACCESSED = _dcm("110103", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = _dcm("110104", "DICOM Instances Transferred")
ORDER_RECORD = _dcm("110109", "Order Record")
PATIENT_RECORD = _dcm("110110", "Patient Record")
PROCEDURE_RECORD = _dcm("110111", "Procedure Record")
QUERY = _dcm("110112", "Query")
SECURITY_ALERT = _dcm("110113", "Security Alert")
USER_AUTHENTICATION = _dcm("110114", "User Authentication")
# CID 401
LOGIN = _dcm("110122", "Login")
NODE_AUTHENTICATION = _dcm("110126", "Node Authentication")
USE_OF_RESTRICTED_FUNCTION = _dcm("110132", "Use of Restricted Function")
OBJECT_SECURITY_ATTRIBUTES_CHANGED = _dcm("110135", "Object Security Attributes Changed")
USER_SECURITY_ATTRIBUTES_CHANGED = _dcm("110137", "User security Attributes Changed")
# CID 402
APPLICATION = _dcm("110150", "Application")
DESTINATION = _dcm("110152", "Destination Role ID")
SOURCE = _dcm("110153", "Source Role ID")
# CID 404, RFC 3881
STUDY_INSTANCE_UID = _dcm("110180", "Study Instance UID")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
URI = Code("12", "RFC-3881", "URI")


class EventKind(NamedTuple):
    """What message one of the gateway's audit actions becomes (PS3.15 A.5.3)."""

    event_id: Code
    action_code: str  # EventActionCode: C R U D E
    type_code: Code | None = None
    requester_role: Code | None = None  # RoleIDCode of the one who asked, where A.5.3 gives one


EVENTS: dict[str, EventKind] = {
    "login": EventKind(USER_AUTHENTICATION, "E", LOGIN),
    "sso-login": EventKind(USER_AUTHENTICATION, "E", LOGIN),
    "totp-confirmed": EventKind(USER_AUTHENTICATION, "E", LOGIN),  # the second factor of a login
    "totp-failed": EventKind(USER_AUTHENTICATION, "E", LOGIN),
    "recovery-code-used": EventKind(USER_AUTHENTICATION, "E", LOGIN),
    "recovery-code-failed": EventKind(USER_AUTHENTICATION, "E", LOGIN),
    "totp-enrolled": EventKind(SECURITY_ALERT, "C", USER_SECURITY_ATTRIBUTES_CHANGED),
    "totp-reset": EventKind(SECURITY_ALERT, "D", USER_SECURITY_ATTRIBUTES_CHANGED),
    "login-lockout": EventKind(SECURITY_ALERT, "E", USER_SECURITY_ATTRIBUTES_CHANGED),
    "associate": EventKind(SECURITY_ALERT, "E", NODE_AUTHENTICATION),  # an association refused for its AE title
    "query": EventKind(QUERY, "E"),
    "retrieve": EventKind(INSTANCES_TRANSFERRED, "R", requester_role=DESTINATION),
    "store": EventKind(INSTANCES_TRANSFERRED, "C", requester_role=SOURCE),
    "share-access": EventKind(INSTANCES_ACCESSED, "R"),
    "share-create": EventKind(SECURITY_ALERT, "C", OBJECT_SECURITY_ATTRIBUTES_CHANGED),
    "share-list": EventKind(SECURITY_ALERT, "R", OBJECT_SECURITY_ATTRIBUTES_CHANGED),
    "share-revoke": EventKind(SECURITY_ALERT, "D", OBJECT_SECURITY_ATTRIBUTES_CHANGED),
    "reidentify": EventKind(PATIENT_RECORD, "R"),  # a vault reveal: a pseudonym's original identifiers shown
    "vault-find": EventKind(PATIENT_RECORD, "R"),  # a patient ID's pseudonyms looked up (pacs-gateway vault find)
    "read-report": EventKind(PROCEDURE_RECORD, "R"),
    "write-report": EventKind(PROCEDURE_RECORD, "U"),
    "finalize-report": EventKind(PROCEDURE_RECORD, "U"),
    "read-audit": EventKind(AUDIT_LOG_USED, "R"),
    "no-route": EventKind(SECURITY_ALERT, "E", USE_OF_RESTRICTED_FUNCTION),
    "emr-outbox": EventKind(PROCEDURE_RECORD, "R"),
    "emr-outbox-retry": EventKind(PROCEDURE_RECORD, "E"),
    "emr-reconciliation": EventKind(PATIENT_RECORD, "R"),
    "emr-reconcile": EventKind(PATIENT_RECORD, "U"),
    "performed-step": EventKind(PROCEDURE_RECORD, "U"),
    "patient-record": EventKind(PATIENT_RECORD, "U"),
    "patient-merge": EventKind(PATIENT_RECORD, "U"),
    "order-record": EventKind(ORDER_RECORD, "U"),
}
# An action this table does not know yet still leaves the box, as a restricted function used: seen, not lost.
UNKNOWN = EventKind(SECURITY_ALERT, "E", USE_OF_RESTRICTED_FUNCTION)
