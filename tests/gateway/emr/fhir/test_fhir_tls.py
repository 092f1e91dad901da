"""The FHIR client over HTTPS: the real FHIR server behind HAProxy terminating TLS with a trial CA's certificate,
without and with a required client certificate; the CA bundle and the host name checked, failures read clearly,
wrong files refused at start; and a gateway process publishing a study over mutual TLS."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.emr.errors import DeliveryError
from gateway.emr.fhir.client import FhirClient
from gateway.settings import FhirSettings
from gateway.tls import TlsConfigError
from gateway.tls_certs import IssuedCertificate, TrialCa, write_trial_set
from tests.factory import Patient, ct_series
from tests.gateway.emr.conftest import MRN_SYSTEM, emr_patient, unique
from tests.gateway_process import GatewayProcess
from tests.peers.haproxy import run_tls_front
from tests.test_journey_emr import emr_env, emr_order, imaging_studies, send, wait_for


@dataclass(frozen=True)
class Fronts:
    ca: TrialCa
    client: IssuedCertificate
    open_port: int  # TLS, no client certificate asked
    mutual_port: int  # TLS, a client certificate from our CA required


@pytest.fixture(scope="module")
def fronts(tmp_path_factory: pytest.TempPathFactory, fhir_base: str) -> Iterator[Fronts]:
    folder = tmp_path_factory.mktemp("fhir-tls")
    ca, server = write_trial_set(folder, ["localhost"])  # by name only: 127.0.0.1 is a host name mismatch
    client = ca.issue(folder, "pacsgw", "PACSGW", client=True)
    backend = int(fhir_base.split(":")[2].split("/")[0])
    with run_tls_front(folder / "open", backend, cert_file=server.cert_file, key_file=server.key_file) as open_port, \
         run_tls_front(folder / "mutual", backend, cert_file=server.cert_file, key_file=server.key_file,
                       client_ca_file=ca.cert_file) as mutual_port:  # fmt: skip
        yield Fronts(ca, client, open_port, mutual_port)


def https(port: int, host: str = "localhost") -> str:
    return f"https://{host}:{port}/fhir/R4"


def search_patient(settings: FhirSettings, mrn: str) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        connector = aiohttp.TCPConnector(ssl=settings.tls_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            client = FhirClient(session, settings.base_url, timeout=5.0)
            return await client.search("Patient", {"identifier": f"{MRN_SYSTEM}|{mrn}"})

    return asyncio.run(run())


def test_https_with_our_ca_finds_the_patient(fronts: Fronts, fhir_base: str) -> None:
    mrn = unique("MRN")
    subject = emr_patient(fhir_base, mrn=mrn)
    found = search_patient(FhirSettings(base_url=https(fronts.open_port), tls_ca_file=str(fronts.ca.cert_file)), mrn)
    assert [f"Patient/{p['id']}" for p in found] == [subject]


def test_a_server_certificate_not_from_the_ca_or_for_another_name_is_refused(fronts: Fronts) -> None:
    with pytest.raises(DeliveryError) as system_cas:  # no CA bundle: the system's, which do not know the trial CA
        search_patient(FhirSettings(base_url=https(fronts.open_port)), "MRN-X")
    assert str(system_cas.value) == (
        "FHIR search Patient: TLS certificate of the server not accepted (unable to get local issuer certificate)"
    )
    with pytest.raises(DeliveryError) as mismatch:
        search_patient(FhirSettings(base_url=https(fronts.open_port, "127.0.0.1"), tls_ca_file=str(fronts.ca.cert_file)), "MRN-X")
    assert str(mismatch.value).startswith("FHIR search Patient: TLS certificate of the server not accepted (IP address mismatch")
    assert system_cas.value.unavailable and mismatch.value.unavailable  # retried from the outbox


def test_a_server_requiring_a_client_certificate_gets_ours(fronts: Fronts, fhir_base: str) -> None:
    mrn = unique("MRN")
    subject = emr_patient(fhir_base, mrn=mrn)
    base = {"base_url": https(fronts.mutual_port), "tls_ca_file": str(fronts.ca.cert_file)}
    with pytest.raises(DeliveryError) as refused:
        search_patient(FhirSettings(**base), mrn)
    assert str(refused.value) == "FHIR search Patient: TLS failed (TLSV13_ALERT_CERTIFICATE_REQUIRED)"
    assert refused.value.unavailable
    shown = FhirSettings(**base, tls_cert_file=str(fronts.client.cert_file), tls_key_file=str(fronts.client.key_file))
    assert [f"Patient/{p['id']}" for p in search_patient(shown, mrn)] == [subject]


def test_unusable_files_are_refused_with_the_option_named(fronts: Fronts, tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError, match=r"fhir \(fhir.tls_\*\) CA bundle .*nowhere.pem"):
        FhirSettings(base_url=https(fronts.open_port), tls_ca_file=str(tmp_path / "nowhere.pem")).tls_context()
    with pytest.raises(TlsConfigError, match="needs both its certificate file and its key file"):
        FhirSettings(base_url=https(fronts.open_port), tls_cert_file=str(fronts.client.cert_file)).tls_context()
    assert FhirSettings(base_url="http://emr.example/fhir").tls_context() is None


def test_a_gateway_publishes_over_mutual_tls_and_refuses_to_start_with_a_missing_ca(fronts: Fronts, fhir_base: str, tmp_path: Path) -> None:
    env = {
        **emr_env(https(fronts.mutual_port)),
        "PACSGW_FHIR_TLS_CA_FILE": str(tmp_path / "missing-ca.pem"),
        "PACSGW_FHIR_TLS_CERT_FILE": str(fronts.client.cert_file),
        "PACSGW_FHIR_TLS_KEY_FILE": str(fronts.client.key_file),
    }
    gateway = GatewayProcess(tmp_path / "data", env)
    try:
        with pytest.raises(RuntimeError, match=r"cannot start: fhir \(fhir.tls_\*\) CA bundle .*missing-ca.pem"):
            gateway.start()
    finally:
        gateway.kill()  # should it have started after all
    gateway.env["PACSGW_FHIR_TLS_CA_FILE"] = str(fronts.ca.cert_file)
    subject = emr_patient(fhir_base, mrn="MRN-FHIR-TLS")
    emr_order(fhir_base, subject, "ACC-FHIR-TLS")
    gateway.start()
    try:
        series = ct_series(2, size=16, patient=Patient(patient_id="MRN-FHIR-TLS"), accession="ACC-FHIR-TLS")
        send(gateway, series, tmp_path / "study")
        [study] = wait_for("ImagingStudy over mutual TLS", lambda: imaging_studies(fhir_base, series[0].StudyInstanceUID))
        assert study["subject"] == {"reference": subject} and study["numberOfInstances"] == 2
    finally:
        gateway.kill()
