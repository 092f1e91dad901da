"""The FHIR client against a real FHIR R4 server: search, conditional update and create, and how failures read."""

from __future__ import annotations

import asyncio
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.emr.errors import DeliveryError
from gateway.emr.fhir.client import FhirClient
from tests.gateway.emr.conftest import MRN_SYSTEM, emr_patient, unique
from tests.peers.fhir import run_fhir_server
from tests.peers.ports import free_port

TOKEN = "emr-link-test-token"


def with_client(base: str, action: Callable[[FhirClient], Awaitable[Any]], *, token: str = "", timeout: float = 5.0) -> Any:
    async def run() -> Any:
        async with aiohttp.ClientSession() as session:
            return await action(FhirClient(session, base, token=token, timeout=timeout))

    return asyncio.run(run())


def _study(uid: str, subject: str, count: int) -> dict[str, Any]:
    return {
        "resourceType": "ImagingStudy", "status": "available", "subject": {"reference": subject},
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}], "numberOfInstances": count,
    }  # fmt: skip


def test_search_and_conditional_update_create_then_replace(fhir_base: str) -> None:
    mrn = unique("MRN")
    subject = emr_patient(fhir_base, mrn=mrn)
    uid = "1.2.826.0.1.3680043.10.99." + str(free_port())
    query = {"identifier": f"urn:dicom:uid|urn:oid:{uid}"}

    async def scenario(client: FhirClient) -> tuple:
        found = await client.search("Patient", {"identifier": f"{MRN_SYSTEM}|{mrn}"})
        nobody = await client.search("Patient", {"identifier": f"{MRN_SYSTEM}|{mrn}-X"})
        created = await client.update_where("ImagingStudy", query, _study(uid, subject, 1))
        updated = await client.update_where("ImagingStudy", query, _study(uid, subject, 2))
        listed = await client.search("ImagingStudy", query)
        return found, nobody, created, updated, listed

    found, nobody, created, updated, listed = with_client(fhir_base, scenario)
    assert [f"Patient/{p['id']}" for p in found] == [subject] and nobody == []
    assert updated["id"] == created["id"] and updated["numberOfInstances"] == 2
    assert [(s["id"], s["numberOfInstances"]) for s in listed] == [(created["id"], 2)]


def test_conditional_create_returns_the_existing_resource(fhir_base: str) -> None:
    address = f"http://pacs-{unique('gw').lower()}.example/dicom-web?x=1&y=2"
    endpoint = {
        "resourceType": "Endpoint", "status": "active", "address": address,
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": address}],
        "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "dicom-wado-rs"},
        "payloadType": [{"text": "DICOM WADO-RS"}],
    }  # fmt: skip

    async def twice(client: FhirClient) -> tuple:
        condition = urllib.parse.urlencode({"identifier": f"urn:ietf:rfc:3986|{address}"})
        first = await client.create_unless("Endpoint", condition, endpoint)
        second = await client.create_unless("Endpoint", condition, endpoint)
        return first, second, await client.search("Endpoint", {"identifier": f"urn:ietf:rfc:3986|{address}"})

    first, second, found = with_client(fhir_base, twice)
    assert first["id"] == second["id"] and [e["id"] for e in found] == [first["id"]]


def test_a_refused_resource_is_a_permanent_failure_that_names_no_value(fhir_base: str) -> None:
    secret = "NGUYEN-VAN-AN-079203001234"
    invalid = {"resourceType": "ImagingStudy", "status": "available", "identifier": [{"value": secret}]}  # no subject

    with pytest.raises(DeliveryError) as caught:
        with_client(fhir_base, lambda c: c.update_where("ImagingStudy", {"identifier": secret}, invalid))
    assert caught.value.permanent and not caught.value.unavailable
    message = str(caught.value)
    assert message.startswith("FHIR PUT ImagingStudy: HTTP 400") and secret not in message and "079203001234" not in message


def test_an_unreachable_or_silent_server_is_unavailable() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(DeliveryError) as refused:
        with_client(f"http://127.0.0.1:{port}/fhir/R4", lambda c: c.search("Patient", {"identifier": "x|y"}))
    assert refused.value.unavailable and not refused.value.permanent
    assert "ClientConnector" in str(refused.value)

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        base = f"http://127.0.0.1:{silent.getsockname()[1]}/fhir/R4"
        with pytest.raises(DeliveryError) as slow:
            with_client(base, lambda c: c.search("Patient", {"identifier": "x|y"}), timeout=0.5)
    assert slow.value.unavailable and "no answer within 0.5 s" in str(slow.value)


def test_bearer_token(tmp_path: Path) -> None:
    with run_fhir_server(tmp_path, token=TOKEN) as base:
        with pytest.raises(DeliveryError) as refused:
            with_client(base, lambda c: c.search("Patient", {"identifier": "x|y"}))
        assert refused.value.permanent and "HTTP 401" in str(refused.value)
        assert with_client(base, lambda c: c.search("Patient", {"identifier": "x|y"}), token=TOKEN) == []
