"""The FHIR test peer behaves like a FHIR R4 server for what the EMR link needs."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .fhir import run_fhir_server

FHIR_JSON = "application/fhir+json"
MRN_SYSTEM = "urn:oid:1.2.826.0.1.3680043.10.1.1"
CITIZEN_SYSTEM = "urn:oid:2.16.840.1.113883.2.4.6.3"
STUDY_UID_SYSTEM = "urn:dicom:uid"
ACCESSION_SYSTEM = "urn:oid:1.2.826.0.1.3680043.10.1.2"
TOKEN = "fhir-test-token"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any = field(default=None)


def call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Accept": FHIR_JSON, **(headers or {})})
    if data is not None:
        request.add_header("Content-Type", FHIR_JSON)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, got, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, got, raw = error.code, dict(error.headers), error.read()
    return Reply(status, got, json.loads(raw) if raw else None)


def search(base: str, resource_type: str, **params: str) -> list[dict[str, Any]]:
    reply = call("GET", f"{base}/{resource_type}?{urllib.parse.urlencode(params)}")
    assert reply.status == 200, reply.body
    assert reply.body["resourceType"] == "Bundle" and reply.body["type"] == "searchset"
    return [entry["resource"] for entry in reply.body.get("entry", []) if entry.get("search", {}).get("mode", "match") == "match"]


@pytest.fixture(scope="module")
def fhir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    t0 = time.monotonic()
    with run_fhir_server(tmp_path_factory.mktemp("fhir")) as base_url:
        print(f"FHIR server (install + start) ready in {time.monotonic() - t0:.2f}s")
        yield base_url


def patient(mrn: str, citizen: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": MRN_SYSTEM, "value": mrn}, {"system": CITIZEN_SYSTEM, "value": citizen}],
        "name": [{"family": "Doe", "given": ["Jane"]}],
        "birthDate": "1970-01-01",
    }


def test_metadata_is_an_r4_capability_statement(fhir: str) -> None:
    reply = call("GET", f"{fhir}/metadata")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith(FHIR_JSON)
    assert reply.body["resourceType"] == "CapabilityStatement"
    assert reply.body["fhirVersion"] == "4.0.1"
    types = {r["type"] for r in reply.body["rest"][0]["resource"]}
    assert {"Patient", "ImagingStudy", "ServiceRequest"} <= types


def test_create_read_and_search_patient_by_either_identifier(fhir: str) -> None:
    created = call("POST", f"{fhir}/Patient", patient("MRN-1001", "900000011"))
    assert created.status == 201, created.body
    patient_id, version = created.body["id"], created.body["meta"]["versionId"]
    assert created.headers["Location"] == f"{fhir}/Patient/{patient_id}/_history/{version}"
    assert created.headers["ETag"] == f'W/"{version}"'

    read = call("GET", f"{fhir}/Patient/{patient_id}")
    assert read.status == 200 and read.body["identifier"] == created.body["identifier"]

    by_mrn = search(fhir, "Patient", identifier=f"{MRN_SYSTEM}|MRN-1001")
    assert [p["id"] for p in by_mrn] == [patient_id]
    by_citizen = search(fhir, "Patient", identifier=f"{CITIZEN_SYSTEM}|900000011")
    assert [p["id"] for p in by_citizen] == [patient_id]
    assert search(fhir, "Patient", identifier=f"{CITIZEN_SYSTEM}|MRN-1001") == []  # the system matters
    assert call("GET", f"{fhir}/Patient/does-not-exist").status == 404


def test_conditional_create_does_not_duplicate(fhir: str) -> None:
    condition = {"If-None-Exist": f"identifier={MRN_SYSTEM}|MRN-2002"}
    first = call("POST", f"{fhir}/Patient", patient("MRN-2002", "900000022"), condition)
    assert first.status == 201, first.body
    again = call("POST", f"{fhir}/Patient", patient("MRN-2002", "900000022"), condition)
    assert again.status == 200, again.body
    assert again.body["id"] == first.body["id"]
    assert len(search(fhir, "Patient", identifier=f"{MRN_SYSTEM}|MRN-2002")) == 1


def test_conditional_update_of_imaging_study_creates_then_updates(fhir: str) -> None:
    subject = call("POST", f"{fhir}/Patient", patient("MRN-3003", "900000033")).body
    url = f"{fhir}/ImagingStudy?" + urllib.parse.urlencode({"identifier": f"{STUDY_UID_SYSTEM}|urn:oid:1.2.3"})
    study = {
        "resourceType": "ImagingStudy",
        "status": "registered",
        "identifier": [{"system": STUDY_UID_SYSTEM, "value": "urn:oid:1.2.3"}],
        "subject": {"reference": f"Patient/{subject['id']}"},
    }
    created = call("PUT", url, study)
    assert created.status == 201, created.body
    assert created.headers["Location"].startswith(f"{fhir}/ImagingStudy/{created.body['id']}/")

    updated = call("PUT", url, {**study, "status": "available", "numberOfInstances": 3})
    assert updated.status == 200, updated.body
    assert updated.body["id"] == created.body["id"]
    assert updated.body["meta"]["versionId"] != created.body["meta"]["versionId"]
    assert updated.headers["ETag"] == f'W/"{updated.body["meta"]["versionId"]}"'

    found = search(fhir, "ImagingStudy", identifier=f"{STUDY_UID_SYSTEM}|urn:oid:1.2.3")
    assert [(s["id"], s["status"], s["numberOfInstances"]) for s in found] == [(created.body["id"], "available", 3)]

    stale = call("PUT", f"{fhir}/ImagingStudy/{created.body['id']}", {**study, "id": created.body["id"]},
                 {"If-Match": created.headers["ETag"]})
    assert stale.status == 412  # optimistic locking on the old version


def test_transaction_bundle_links_and_search_service_request(fhir: str) -> None:
    patient_ref = "urn:uuid:4f1c2a52-8c1e-4f5e-9a37-7d0f0c6f1a01"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_ref,
                "resource": patient("MRN-4004", "900000044"),
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={MRN_SYSTEM}|MRN-4004"},
            },
            {
                "resource": {
                    "resourceType": "ServiceRequest",
                    "status": "active",
                    "intent": "order",
                    "identifier": [{"system": ACCESSION_SYSTEM, "value": "ACC-4004"}],
                    "code": {"text": "CT head"},
                    "subject": {"reference": patient_ref},
                },
                "request": {"method": "PUT", "url": f"ServiceRequest?identifier={ACCESSION_SYSTEM}|ACC-4004"},
            },
        ],
    }
    reply = call("POST", fhir, bundle)
    assert reply.status == 200, reply.body
    assert reply.body["type"] == "transaction-response"
    statuses = [entry["response"]["status"] for entry in reply.body["entry"]]
    assert all(s.startswith("201") for s in statuses), statuses
    patient_id = reply.body["entry"][0]["resource"]["id"]

    orders = search(fhir, "ServiceRequest", identifier=f"{ACCESSION_SYSTEM}|ACC-4004")
    assert len(orders) == 1
    assert orders[0]["subject"]["reference"] == f"Patient/{patient_id}"  # urn:uuid resolved
    chained = search(fhir, "ServiceRequest", **{"subject:Patient.identifier": f"{MRN_SYSTEM}|MRN-4004"})
    assert [o["id"] for o in chained] == [orders[0]["id"]]

    failing = {**bundle, "entry": [*bundle["entry"], {"resource": {"resourceType": "ServiceRequest"}, "request": {"method": "POST", "url": "ServiceRequest"}}]}
    assert call("POST", fhir, failing).status == 400  # invalid entry: the whole transaction is refused
    assert len(search(fhir, "ServiceRequest", identifier=f"{ACCESSION_SYSTEM}|ACC-4004")) == 1


def test_invalid_resources_are_refused(fhir: str) -> None:
    missing = call("POST", f"{fhir}/ServiceRequest", {"resourceType": "ServiceRequest", "status": "active"})
    assert missing.status == 400 and missing.body["resourceType"] == "OperationOutcome"
    unknown = call("POST", f"{fhir}/Patient", {"resourceType": "Patient", "mrn": "x"})
    assert unknown.status == 400


def test_bearer_token_is_required_when_configured(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with run_fhir_server(tmp_path, token=TOKEN) as base:
        print(f"FHIR server start (cached install) in {time.monotonic() - t0:.2f}s")
        assert call("GET", f"{base}/metadata").status == 200  # the capability statement stays public
        refused = call("POST", f"{base}/Patient", patient("MRN-5005", "900000055"))
        assert refused.status == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
        assert call("GET", f"{base}/Patient", headers={"Authorization": "Bearer wrong"}).status == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert call("POST", f"{base}/Patient", patient("MRN-5005", "900000055"), auth).status == 201
        assert call("GET", f"{base}/Patient?identifier=MRN-5005", headers=auth).body["total"] == 1
