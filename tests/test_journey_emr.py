"""Journey: the EMR link. A modality sends a study; once no instance has arrived for a second it is published to
the EMR's FHIR server as an ImagingStudy of the right Patient, based on its order, with a DICOMweb Endpoint; more
instances update it; a patient known to the EMR only by citizen ID is found; an unknown patient waits for an
administrator; a signed report becomes a DiagnosticReport; the EMR down for a while loses and doubles nothing.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import storescu
from tests.factory import Patient, ct_series, write_files
from tests.gateway_process import GatewayProcess
from tests.peers.fhir import run_fhir_server
from tests.peers.ports import free_port
from tests.peers.test_fhir_peer import call, search

MRN_SYSTEM = "urn:oid:1.2.826.0.1.3680043.10.1.1"
ACCESSION_SYSTEM = "urn:oid:1.2.826.0.1.3680043.10.1.2"
CITIZEN_SYSTEM = "http://fhir.hl7.org.vn/core/sid/cccd"
INSURANCE_SYSTEM = "http://fhir.hl7.org.vn/core/sid/bhyt"
FINDINGS = "- Nhu mô phổi hai bên sáng đều.\n- Không tràn dịch màng phổi."
IMPRESSION = "Chưa phát hiện bất thường trên CT ngực."


def emr_env(base_url: str) -> dict[str, str]:
    return {
        "PACSGW_FHIR_BASE_URL": base_url,
        "PACSGW_FHIR_STABLE_SECONDS": "1",
        "PACSGW_FHIR_RETRY_INITIAL_SECONDS": "0.2",
        "PACSGW_FHIR_RETRY_MAX_SECONDS": "1",
        "PACSGW_FHIR_TIMEOUT_SECONDS": "2",
        "PACSGW_FHIR_PATIENT_IDENTIFIER_SYSTEMS": f"BV-CHORAY={MRN_SYSTEM}",
        "PACSGW_FHIR_ACCESSION_SYSTEM": ACCESSION_SYSTEM,
    }


def start_gateway(folder: Path, base_url: str) -> GatewayProcess:
    gateway = GatewayProcess(folder, emr_env(base_url))
    gateway.env["PACSGW_HTTP_PUBLIC_URL"] = gateway.base_url
    gateway.start()
    return gateway


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def created(base: str, resource: dict[str, Any]) -> str:
    reply = call("POST", f"{base}/{resource['resourceType']}", resource)
    assert reply.status == 201, reply.body
    return f"{resource['resourceType']}/{reply.body['id']}"


def emr_patient(base: str, **identifiers: str) -> str:
    systems = {"mrn": MRN_SYSTEM, "citizen": CITIZEN_SYSTEM, "insurance": INSURANCE_SYSTEM}
    return created(base, {
        "resourceType": "Patient", "name": [{"family": "Nguyễn", "given": ["Văn An"]}],
        "identifier": [{"system": systems[k], "value": v} for k, v in identifiers.items()],
    })  # fmt: skip


def emr_order(base: str, patient: str, accession: str) -> str:
    return created(base, {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order", "code": {"text": "CT ngực"},
        "subject": {"reference": patient}, "identifier": [{"system": ACCESSION_SYSTEM, "value": accession}],
    })  # fmt: skip


def imaging_studies(base: str, study_uid: str) -> list[dict[str, Any]]:
    return search(base, "ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{study_uid}")


def send(gateway: GatewayProcess, datasets: list, folder: Path) -> None:
    result = storescu(gateway.dicom_port, write_files(datasets, folder))
    assert result.returncode == 0, result.stderr


def sign_report(gateway: GatewayProcess, study_uid: str) -> None:
    status, _ = gateway.send("PUT", f"/studies/{study_uid}/report", {"findings": FINDINGS, "impression": IMPRESSION, "template": "CT ngực"})
    assert status == 200
    status, _ = gateway.send("POST", f"/studies/{study_uid}/report/final")
    assert status == 200


@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, GatewayProcess, Path]]:
    tmp = tmp_path_factory.mktemp("emr")
    with run_fhir_server(tmp / "fhir") as base:
        gateway = start_gateway(tmp / "gw", base)
        try:
            yield base, gateway, tmp
        finally:
            gateway.kill()


@pytest.fixture(scope="module")
def published(emr) -> dict[str, Any]:
    """A study of a patient the EMR knows by MRN, citizen ID and insurance number, with its order, published."""
    base, gateway, tmp = emr
    patient = Patient(patient_id="MRN-EMR-1", citizen_id="079203000001", insurance_number="DN4790000000001")
    subject = emr_patient(base, mrn="MRN-EMR-1", citizen="079203000001", insurance="DN4790000000001")
    order = emr_order(base, subject, "ACC-EMR-1")
    series = ct_series(3, size=16, patient=patient, accession="ACC-EMR-1")
    send(gateway, series, tmp / "study1")
    study_uid = series[0].StudyInstanceUID
    [study] = wait_for("ImagingStudy", lambda: imaging_studies(base, study_uid))
    return {"study_uid": study_uid, "subject": subject, "order": order, "study": study, "patient": patient}


def test_a_stable_study_becomes_an_imaging_study(emr, published) -> None:
    base, gateway, _ = emr
    study, uid = published["study"], published["study_uid"]
    assert study["identifier"][0] == {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}
    accession = study["identifier"][1]
    assert (accession["system"], accession["value"], accession["type"]["coding"][0]["code"]) == (ACCESSION_SYSTEM, "ACC-EMR-1", "ACSN")
    assert study["status"] == "available" and study["subject"] == {"reference": published["subject"]}
    assert study["basedOn"] == [{"reference": published["order"]}]
    assert (study["numberOfSeries"], study["numberOfInstances"], study["started"]) == (1, 3, "2024-03-15T10:15:00+07:00")
    assert study["modality"] == [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT", "display": "Computed Tomography"}]
    [series] = study["series"]
    assert series["numberOfInstances"] == 3 and len(series["instance"]) == 3 and series["bodySite"]["code"] == "816094009"

    # The Endpoint is the gateway's DICOMweb, and it serves the study.
    endpoint_id = study["endpoint"][0]["reference"].split("/")[1]
    endpoint = call("GET", f"{base}/Endpoint/{endpoint_id}").body
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs" and endpoint["address"] == gateway.base_url + "/dicom-web"
    status, metadata = gateway.get(urllib.parse.urlparse(endpoint["address"]).path + f"/studies/{uid}/metadata")
    assert status == 200 and len(metadata) == 3

    status, delivered = gateway.get("/emr/outbox?state=delivered")
    assert status == 200 and [(r["kind"], r["subject"]) for r in delivered] == [("imaging-study", uid)]
    assert "MRN-EMR-1" not in str(delivered)


def test_more_instances_update_the_same_imaging_study(emr, published) -> None:
    base, gateway, tmp = emr
    uid = published["study_uid"]
    later = ct_series(2, size=16, patient=published["patient"], study_uid=uid, accession="ACC-EMR-1")
    for ds in later:
        ds.SeriesNumber = 2
    send(gateway, later, tmp / "study1-more")
    [study] = wait_for("5 instances", lambda: [s for s in imaging_studies(base, uid) if s["numberOfInstances"] == 5])
    assert study["id"] == published["study"]["id"] and study["numberOfSeries"] == 2
    assert len(imaging_studies(base, uid)) == 1
    assert len(search(base, "Endpoint", identifier=f"urn:ietf:rfc:3986|{gateway.base_url}/dicom-web")) == 1


def test_a_patient_known_only_by_citizen_id_is_linked(emr) -> None:
    base, gateway, tmp = emr
    subject = emr_patient(base, citizen="079203000002")
    emr_order(base, emr_patient(base, mrn="MRN-SOMEONE-ELSE"), "ACC-EMR-2")  # the accession, on another's order
    series = ct_series(2, size=16, patient=Patient(patient_id="MRN-NOT-IN-EMR", citizen_id="079203000002"), accession="ACC-EMR-2")
    send(gateway, series, tmp / "study2")
    [study] = wait_for("ImagingStudy", lambda: imaging_studies(base, series[0].StudyInstanceUID))
    assert study["subject"] == {"reference": subject} and "basedOn" not in study  # not this patient's order


def test_an_unknown_patient_waits_for_an_administrator(emr) -> None:
    base, gateway, tmp = emr
    patient = Patient(patient_id="MRN-UNKNOWN", citizen_id="079203000003", insurance_number="DN4790000000003")
    series = ct_series(2, size=16, patient=patient, accession="ACC-EMR-3")
    uid = series[0].StudyInstanceUID
    send(gateway, series, tmp / "study3")
    [item] = wait_for("reconciliation item", lambda: [i for i in gateway.get("/emr/reconciliation")[1] if i["study_uid"] == uid])
    assert item["reason"] == "no EMR patient carries the study's MRN, citizen ID or insurance number"
    assert [(t["identifier"], t["matches"]) for t in item["tried"]] == [("mrn", 0), ("citizen-id", 0), ("insurance-number", 0)]
    assert item["patient_pk"] and item["resolved_at"] is None
    for value in ("MRN-UNKNOWN", "079203000003", "DN4790000000003", "Nguy"):
        assert value not in str(item)
    [waiting] = [r for r in gateway.get("/emr/outbox?state=failed")[1] if r["subject"] == uid]
    assert waiting["last_error"].startswith(f"waiting for reconciliation #{item['id']}")
    assert imaging_studies(base, uid) == []

    reader = {"Authorization": f"Bearer {gateway.add_user('dr.emr', 'radiologist')}"}
    assert gateway.get("/emr/reconciliation", reader, auth=False)[0] == 403
    assert gateway.send("POST", f"/emr/reconciliation/{item['id']}/resolve", {"patient": "Patient/x"}, reader, auth=False)[0] == 403
    assert gateway.send("POST", f"/emr/reconciliation/{item['id']}/resolve", {"patient": "Practitioner/1"})[0] == 400

    chosen = emr_patient(base, mrn="MRN-EMR-3-REGISTERED")
    status, resolved = gateway.send("POST", f"/emr/reconciliation/{item['id']}/resolve", {"patient": chosen})
    assert status == 200 and (resolved["patient"], resolved["resolved_by"]) == (chosen, "test-admin")
    [study] = wait_for("ImagingStudy after resolve", lambda: imaging_studies(base, uid), timeout=10)
    assert study["subject"] == {"reference": chosen}
    assert gateway.send("POST", f"/emr/reconciliation/{item['id']}/resolve", {"patient": chosen})[0] == 409
    actions = {e["action"] for e in gateway.get("/audit?limit=1000")[1]}
    assert {"emr-reconciliation", "emr-reconcile", "emr-outbox"} <= actions


def test_a_signed_report_becomes_a_diagnostic_report(emr, published) -> None:
    base, gateway, _ = emr
    uid = published["study_uid"]
    sign_report(gateway, uid)
    [report] = wait_for("DiagnosticReport", lambda: search(base, "DiagnosticReport", subject=published["subject"]))
    assert report["status"] == "final" and report["conclusion"] == IMPRESSION
    assert report["imagingStudy"] == [{"reference": f"ImagingStudy/{published['study']['id']}"}]
    assert report["basedOn"] == [{"reference": published["order"]}]
    assert report["code"]["coding"][0]["code"] == "18747-6" and report["performer"][0]["display"] == "test-admin"
    assert report["effectiveDateTime"] == "2024-03-15T10:15:00+07:00"
    assert len(imaging_studies(base, uid)) == 1


def test_the_emr_down_for_a_while_loses_and_doubles_nothing(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir/R4"
    gateway = start_gateway(tmp_path / "gw", base)  # the EMR is not there yet
    try:
        series = ct_series(4, size=16, patient=Patient(patient_id="MRN-DOWN-1"), accession="ACC-DOWN-1")
        uid = series[0].StudyInstanceUID
        started = time.monotonic()
        send(gateway, series, tmp_path / "study")  # receiving does not wait for the EMR
        assert time.monotonic() - started < 10
        gateway.wait_idle()
        sign_report(gateway, uid)
        failed = wait_for("a failure in the outbox", lambda: gateway.get("/emr/outbox?state=failed")[1])
        assert "ClientConnector" in failed[0]["last_error"] and failed[0]["attempts"] >= 1
        metrics = wait_for("both messages waiting", lambda: "pacsgw_emr_outbox_pending 2.0" in (m := gateway.get("/metrics")[1]) and m)
        assert "pacsgw_emr_delivery_failures_total{" in metrics
        assert gateway.get("/health")[0] == 200  # the EMR being down is not the gateway being down
        retry = gateway.send("POST", f"/emr/outbox/{failed[0]['id']}/retry")
        assert retry[0] == 200 and retry[1]["delivered_at"] is None
        assert gateway.send("POST", "/emr/outbox/999999/retry")[0] == 404

        with run_fhir_server(tmp_path / "fhir", port=port):
            subject = emr_patient(base, mrn="MRN-DOWN-1")
            emr_order(base, subject, "ACC-DOWN-1")
            delivered = wait_for("both messages delivered", lambda: len(gateway.get("/emr/outbox?state=delivered")[1]) == 2 and gateway.get("/emr/outbox?state=delivered")[1])
            assert {r["kind"] for r in delivered} == {"imaging-study", "diagnostic-report"}
            [study] = imaging_studies(base, uid)
            assert study["subject"] == {"reference": subject} and study["numberOfInstances"] == 4
            [report] = search(base, "DiagnosticReport", subject=subject)
            assert report["imagingStudy"] == [{"reference": f"ImagingStudy/{study['id']}"}]
            assert len(search(base, "Endpoint")) == 1
            assert gateway.get("/emr/outbox?state=failed")[1] == [] and gateway.get("/emr/outbox?state=pending")[1] == []
            assert gateway.get("/emr/outbox/1/retry")[0] == 405
            assert gateway.send("POST", f"/emr/outbox/{delivered[0]['id']}/retry")[0] == 409
            metrics = gateway.get("/metrics")[1]
            assert 'pacsgw_emr_delivered_total{kind="diagnostic-report"} 1.0' in metrics
            assert 'pacsgw_emr_delivered_total{kind="imaging-study"} 1.0' in metrics
    finally:
        gateway.kill()


def test_a_pseudonymised_study_is_matched_through_the_vault(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[defaults]\nmode = "pseudonymised"\n')
    with run_fhir_server(tmp_path / "fhir") as base:
        subject = emr_patient(base, mrn="MRN-PSEUDO-1")
        order = emr_order(base, subject, "ACC-PSEUDO-1")
        gateway = GatewayProcess(tmp_path / "gw", {
            **emr_env(base), "PACSGW_DEID_RULES_FILE": str(rules), "PACSGW_DEID_SECRET": "emr-journey-secret-0123456789abcdefghij",
        })  # fmt: skip
        gateway.start()
        try:
            send(gateway, ct_series(2, size=16, patient=Patient(patient_id="MRN-PSEUDO-1"), accession="ACC-PSEUDO-1"), tmp_path / "s")
            [study] = wait_for("ImagingStudy", lambda: search(base, "ImagingStudy", subject=subject))
            assert study["basedOn"] == [{"reference": order}] and study["started"].startswith("2024-03-15")
            assert study["identifier"][1]["value"] == "ACC-PSEUDO-1"  # the original, from the vault
            served = study["identifier"][0]["value"].removeprefix("urn:oid:")
            assert served.startswith("2.25.") and gateway.get(f"/dicom-web/studies/{served}/metadata")[0] == 200
            assert "MRN-PSEUDO-1" not in gateway.log_tail(10_000)
        finally:
            gateway.kill()
