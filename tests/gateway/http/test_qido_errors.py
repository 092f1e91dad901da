"""QIDO-RS refuses bad requests with a reason (PS3.18), never with a stack trace."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    from tests.gateway_process import GatewayProcess

    gw = GatewayProcess(tmp_path_factory.mktemp("qido") / "gw", {})
    gw.start()
    yield gw
    gw.kill()


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("StudyDate=2024", "is not a date"),
        ("StudyDate=20240230", "is not a date"),
        ("StudyDate=20240301-20240101", "starts after it ends"),
        ("StudyInstanceUID=1.2.03", "not a valid DICOM UID"),
        ("limit=0", "limit must be between"),
        ("limit=abc", "limit must be a whole number"),
        ("offset=-1", "offset must be between"),
        ("fuzzymatching=maybe", "fuzzymatching must be"),
        ("Frobnicate=1", "unknown query parameter"),
        ("SeriesDescription=x", "not a supported matching key"),
        ("PatientID=1&PatientID=2", "given more than once"),
        ("includefield=NoSuchAttribute", "unknown attribute"),
    ],
)
def test_bad_query_is_400_with_reason(gateway, query: str, reason: str) -> None:
    status, body = gateway.get(f"/dicom-web/studies?{query}")
    assert status == 400
    assert reason in body["error"]


def test_unsupported_accept_is_406(gateway) -> None:
    status, body = gateway.get("/dicom-web/studies", {"Accept": "application/xml"})
    assert status == 406 and "application/dicom+json" in body["error"]


def test_tag_form_and_includefield_are_understood(gateway) -> None:
    status, body = gateway.get("/dicom-web/studies?00100020=nobody&includefield=all&includefield=00081030,PatientAge")
    assert status == 200 and body == []


def test_health_and_metrics(gateway) -> None:
    status, body = gateway.get("/health")
    assert status == 200 and body["ready"] and body["index"]["ok"] and body["object_store"]["ok"]
    assert body["dicom"] == {"ae_title": "PACSGW", "port": gateway.dicom_port, "tls_port": None, "associations": 0}
    status, text = gateway.get("/metrics")
    assert status == 200 and "pacsgw_spool_backlog_instances 0.0" in text
