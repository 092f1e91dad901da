"""A real FHIR R4 server for the EMR link's tests (one per session; tests make their own uniquely named data),
and an index on SQLite with studies in it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.index.database import IndexDatabase
from tests.peers.fhir import run_fhir_server
from tests.peers.test_fhir_peer import call

MRN_SYSTEM = "urn:oid:1.2.826.0.1.3680043.10.1.1"
ACCESSION_SYSTEM = "urn:oid:1.2.826.0.1.3680043.10.1.2"
CITIZEN_SYSTEM = "http://fhir.hl7.org.vn/core/sid/cccd"
INSURANCE_SYSTEM = "http://fhir.hl7.org.vn/core/sid/bhyt"


@pytest.fixture(scope="session")
def fhir_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with run_fhir_server(tmp_path_factory.mktemp("fhir")) as base_url:
        yield base_url


@pytest.fixture
def sqlite_index(tmp_path: Path) -> Iterator[IndexDatabase]:
    index = IndexDatabase.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
    yield index
    index.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8].upper()}"


def create(base: str, resource: dict[str, Any]) -> dict[str, Any]:
    reply = call("POST", f"{base}/{resource['resourceType']}", resource)
    assert reply.status == 201, reply.body
    return reply.body


def emr_patient(
    base: str, *, mrn: str | None = None, citizen: str | None = None, insurance: str | None = None, **more: str
) -> str:
    """A Patient in the EMR with the identifiers given (and ``more`` elements, e.g. birthDate); its reference."""
    identifiers = []
    for system, value in ((MRN_SYSTEM, mrn), (CITIZEN_SYSTEM, citizen), (INSURANCE_SYSTEM, insurance)):
        if value:
            identifiers.append({"system": system, "value": value})
    body = create(base, {"resourceType": "Patient", "identifier": identifiers, "name": [{"family": "Nguyễn", "given": ["Văn An"]}], **more})
    return f"Patient/{body['id']}"


def emr_order(base: str, patient_ref: str, accession: str) -> str:
    body = create(base, {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order", "code": {"text": "CT ngực"},
        "subject": {"reference": patient_ref}, "identifier": [{"system": ACCESSION_SYSTEM, "value": accession}],
    })  # fmt: skip
    return f"ServiceRequest/{body['id']}"


def digits(n: int = 12) -> str:
    return str(uuid.uuid4().int)[:n]
