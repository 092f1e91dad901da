"""DICOM Audit Messages of the gateway's audit events: valid against the PS3.15 A.5.1 schema, coded per A.5.3."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from lxml import etree

from gateway.atna.codes import EVENTS
from gateway.atna.message import AuditSource, audit_message
from gateway.atna.syslog import frame, syslog_message
from tests.gateway.atna.received import parse, schema, validate

SOURCE = AuditSource("pacsgw-1", "BV-CHORAY", "gw1.hospital.example", "worker-0", "PACSGW")
AT = dt.datetime(2026, 12, 2, 9, 30, 5, 123000, tzinfo=dt.timezone.utc)
PSEUDONYM = "PGWABCDEFGHIJKLMNOPQ"
DIGEST = "hmac:0123456789abcdef01234567"
STUDY = "1.2.826.0.1.3680043.10.54.7"

# One event as each part of the gateway records it (gateway.http.auth, .login, gateway.dimse, gateway.emr.hl7).
EXAMPLES = {
    "login": dict(username=DIGEST, role="", target="/auth/login", source="10.1.2.3", outcome=401),
    "sso-login": dict(username="alice", role="radiologist", target="/auth/oidc/callback", source="10.1.2.3", outcome=200),
    "totp-confirmed": dict(username="carol", role="admin", target="/auth/login", source="10.1.2.8", outcome=200),
    "totp-failed": dict(username="carol", role="admin", target="/auth/login", source="10.1.2.8", outcome=401),
    "recovery-code-used": dict(username="carol", role="admin", target="/auth/login", source="10.1.2.8", outcome=200),
    "recovery-code-failed": dict(username="carol", role="admin", target="/auth/login", source="10.1.2.8", outcome=401),
    "totp-enrolled": dict(username="carol", role="admin", target="/auth/login enrolment pending", source="10.1.2.8",
                          outcome=401),
    "totp-reset": dict(username="carol", role="admin", target="cli reset-totp by root", source="cli", outcome=200),
    "associate": dict(username="EVIL", role="dicom", target="A-ASSOCIATE-RJ calling AE title not recognized (TLS)",
                      source="10.9.9.9", outcome=3),
    "login-lockout": dict(username="alice", role="", target="/auth/login pair locked 60 s", source="10.1.2.3", outcome=429),
    "query": dict(username="alice", role="radiologist", target=f"/dicom-web/studies?PatientID={PSEUDONYM}&limit=10",
                  source="10.1.2.3", outcome=200),
    "retrieve": dict(username="STORESCU", role="dicom", target=f"C-MOVE StudyInstanceUID={STUDY}", source="10.1.2.4",
                     outcome=0),
    "store": dict(username="bob", role="technologist", target="/dicom-web/studies", source="10.1.2.5", outcome=200),
    "share-access": dict(username="share-17", role="share", target=f"/dicom-web/studies/{STUDY}/metadata",
                         source="203.0.113.9", outcome=200),
    "share-create": dict(username="alice", role="radiologist", target=f"/dicom-web/studies/{STUDY}/shares",
                         source="10.1.2.3", outcome=201),
    "share-list": dict(username="alice", role="radiologist", target=f"/dicom-web/studies/{STUDY}/shares",
                       source="10.1.2.3", outcome=200),
    "share-revoke": dict(username="alice", role="radiologist", target="/shares/12", source="10.1.2.3", outcome=204),
    "reidentify": dict(username="carol", role="admin", target=f"/vault/patient/{PSEUDONYM}", source="::1", outcome=200),
    "vault-find": dict(username="root", role="", target="cli vault find hmac:3f2a9c0d1e7b", source="cli", outcome=200),
    "read-report": dict(username="dave", role="referrer", target=f"/studies/{STUDY}/report", source="10.1.2.6",
                        outcome=403),
    "write-report": dict(username="alice", role="radiologist", target=f"/studies/{STUDY}/report", source="10.1.2.3",
                         outcome=200),
    "finalize-report": dict(username="alice", role="radiologist", target=f"/studies/{STUDY}/report/final",
                            source="10.1.2.3", outcome=500),
    "read-audit": dict(username="erin", role="auditor", target="/audit?limit=100", source="10.1.2.7", outcome=200),
    "no-route": dict(username="alice", role="radiologist", target="/hmac:aaaaaaaaaaaaaaaaaaaaaaaa", source="10.1.2.3",
                     outcome=404),
    "emr-outbox": dict(username="carol", role="admin", target="/emr/outbox?state=failed", source="10.1.2.8", outcome=200),
    "emr-outbox-retry": dict(username="carol", role="admin", target="/emr/outbox/4/retry", source="10.1.2.8", outcome=202),
    "emr-reconciliation": dict(username="carol", role="admin", target="/emr/reconciliation", source="10.1.2.8",
                               outcome=200),
    "emr-reconcile": dict(username="carol", role="admin", target="/emr/reconciliation/3/resolve", source="10.1.2.8",
                          outcome=200),
    "performed-step": dict(username="CT1", role="dicom", target=f"MPPS N-CREATE {STUDY}.9", source="10.1.3.1",
                           outcome=0),
    "patient-record": dict(username="hl7", role="hl7", target=f"ADT^A08 MSG0001 PatientID={DIGEST}&IssuerOfPatientID="
                           "hmac:fedcba9876543210fedcba98", source="10.1.4.1", outcome=0),
    "patient-merge": dict(username="hl7", role="hl7", target=f"ADT^A40 MSG0002 surviving PatientID={DIGEST} merged "
                          f"PatientID={PSEUDONYM} studies=2", source="10.1.4.1", outcome=0),
    "order-record": dict(username="hl7", role="hl7", target="ORM^O01 MSG0003", source="emr.hospital.example", outcome=0),
}  # fmt: skip


def _message(action: str, **changes: object) -> etree._Element:
    event = {"at": AT, "action": action, **EXAMPLES[action], **changes}
    return validate(audit_message(event, SOURCE))


def test_every_action_has_an_example() -> None:
    assert set(EXAMPLES) == set(EVENTS)


@pytest.mark.parametrize("action", sorted(EVENTS))
def test_each_event_is_a_schema_valid_audit_message_with_its_codes(action: str) -> None:
    root = _message(action)
    kind = EVENTS[action]
    ident = root.find("EventIdentification")
    assert ident.find("EventID").attrib == {"csd-code": kind.event_id.code, "codeSystemName": "DCM",
                                            "originalText": kind.event_id.meaning}  # fmt: skip
    assert ident.get("EventActionCode") == kind.action_code
    assert ident.get("EventDateTime") == "2026-12-02T09:30:05.123+00:00"
    types = [t.get("csd-code") for t in ident.findall("EventTypeCode")]
    assert types == ([kind.type_code.code] if kind.type_code else [])
    requester, gateway = root.findall("ActiveParticipant")
    assert requester.get("UserIsRequestor") == "true" and requester.get("UserID") == EXAMPLES[action]["username"]
    assert gateway.get("UserIsRequestor") == "false" and gateway.get("AlternativeUserID") == "worker-0"
    source = root.find("AuditSourceIdentification")
    assert source.get("AuditSourceID") == "pacsgw-1" and source.get("AuditEnterpriseSiteID") == "BV-CHORAY"


def test_outcomes_read_as_their_protocol_means_them() -> None:
    def indicator(action: str, outcome: int) -> str:
        return str(_message(action, outcome=outcome).find("EventIdentification").get("EventOutcomeIndicator"))

    assert indicator("query", 200) == "0" and indicator("query", 403) == "4" and indicator("query", 503) == "8"
    assert indicator("retrieve", 0) == "0" and indicator("retrieve", 0xA701) == "4" and indicator("retrieve", 0xC000) == "4"
    assert _message("read-report").find("EventIdentification/EventOutcomeDescription").text == "read-report outcome 403"


def test_studies_and_patients_are_participant_objects_as_the_trail_keeps_them() -> None:
    objects = _message("patient-merge").findall("ParticipantObjectIdentification")
    patients = [(o.get("ParticipantObjectID"), o.find("ParticipantObjectIDTypeCode").get("csd-code")) for o in objects
                if o.get("ParticipantObjectTypeCodeRole") == "1"]  # fmt: skip
    assert patients == [(DIGEST, "2"), (PSEUDONYM, "2")]  # a digest or a pseudonym, never an identifier in clear
    study = _message("retrieve").find("ParticipantObjectIdentification")
    assert (study.get("ParticipantObjectID"), study.get("ParticipantObjectTypeCode"), study.get("ParticipantObjectTypeCodeRole")) == (STUDY, "2", "3")
    assert study.find("ParticipantObjectIDTypeCode").get("csd-code") == "110180"
    reveal = _message("reidentify").findall("ParticipantObjectIdentification")
    assert [o.get("ParticipantObjectID") for o in reveal if o.get("ParticipantObjectTypeCode") == "1"] == [PSEUDONYM]


def test_a_query_carries_its_parameters_as_the_trail_keeps_them() -> None:
    [*_patients, request] = _message("query").findall("ParticipantObjectIdentification")
    assert request.get("ParticipantObjectTypeCodeRole") == "24"
    assert base64.b64decode(request.find("ParticipantObjectQuery").text).decode() == EXAMPLES["query"]["target"]


def test_an_unknown_action_still_leaves_as_a_valid_message() -> None:
    event = {"at": AT, "action": "totp-enrol", "username": "alice", "role": "admin", "target": "/auth/totp",
             "source": "10.0.0.1", "outcome": 200}  # fmt: skip
    root = validate(audit_message(event, SOURCE))
    assert root.find("EventIdentification/EventID").get("csd-code") == "110113"
    assert "totp-enrol" in root.find("EventIdentification/EventOutcomeDescription").text


def test_text_that_could_break_the_xml_or_the_line_stays_inside_its_attribute() -> None:
    root = _message("login", username='x"/><Evil a="\n', source="not an address")
    assert root.find("ActiveParticipant").get("UserID") == 'x"/><Evil a="\n'
    assert b"\n" not in audit_message({"at": AT, "action": "login", **EXAMPLES["login"], "username": "a\nb"}, SOURCE)


def test_the_schema_refuses_what_the_standard_does_not_allow() -> None:
    good = audit_message({"at": AT, "action": "query", **EXAMPLES["query"]}, SOURCE)
    for bad in (
        good.replace(b'EventOutcomeIndicator="0"', b'EventOutcomeIndicator="1"'),
        good.replace(b'EventActionCode="E"', b'EventActionCode="X"'),
        good.replace(b"<AuditSourceIdentification", b"<Unexpected /><AuditSourceIdentification"),
        good.replace(b' originalText="Query"', b""),
    ):
        assert not schema().validate(etree.fromstring(bad))


def test_the_syslog_message_is_rfc5424_with_its_sequence_number_and_octet_counted() -> None:
    payload = audit_message({"at": AT, "action": "query", **EXAMPLES["query"]}, SOURCE)
    message = syslog_message(payload, when=AT, host="gw1.hospital.example", process="worker-0", number=7)
    assert message.startswith(b'<85>1 2026-12-02T09:30:05.123Z gw1.hospital.example pacs-gateway worker-0 '
                              b'IHE+RFC-3881 [meta sequenceId="7"] <AuditMessage>')  # fmt: skip
    assert frame(message) == str(len(message)).encode() + b" " + message
    received = parse(message.decode())
    assert (received.process, received.sequence, received.event_id) == ("worker-0", 7, "110112")
    wrapped = syslog_message(payload, when=AT, host="h", process="p", number=2_147_483_648)
    assert b'sequenceId="1"' in wrapped
