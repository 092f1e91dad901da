"""ORU^R01 over TLS (MLLP over TLS) to a real EMR listener (python-hl7's server on Python's ``ssl``): delivered
with the right CA and host name; a wrong CA, another host name or a missing client certificate is a delivery
failure with a clear reason; through a gateway process, the failure is retried from the outbox, and once the CA
bundle is fixed the report is delivered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.emr.hl7.sender import Hl7DeliveryError, send_message
from gateway.settings import Hl7Settings
from gateway.tls import TlsConfigError
from gateway.tls_certs import IssuedCertificate, TrialCa, write_trial_set
from tests.factory import Patient, ct_series
from tests.gateway_process import GatewayProcess
from tests.peers.mllp import mllp_listener, tls_server_context
from tests.test_journey_emr import send, sign_report, wait_for

ORU = "MSH|^~\\&|PACSGW|RADIOLOGY|EMR|BV|20261202080000||ORU^R01^ORU_R01|PGW1|P|2.5\rPID|1||MRN-ORU-TLS^^^BV^MR\r"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrialCa, Path, Path, IssuedCertificate, TrialCa]:
    folder = tmp_path_factory.mktemp("pki")
    ca, emr = write_trial_set(folder, ["localhost", "127.0.0.1"])
    ours = ca.issue(folder, "pacsgw", "PACSGW", client=True)
    other = TrialCa.create(folder / "other", "Another CA")
    return ca, emr.cert_file, emr.key_file, ours, other


def outbound(ca_file: Path, **more: object) -> Hl7Settings:
    return Hl7Settings(outbound_host="127.0.0.1", outbound_port=1, outbound_tls=True, outbound_tls_ca_file=str(ca_file), **more)  # type: ignore[arg-type]


def deliver(port: int, settings: Hl7Settings) -> str:
    return asyncio.run(send_message("127.0.0.1", port, ORU, 5.0, tls=settings.outbound_tls_context(), server_name=settings.outbound_server_name))


def test_oru_over_tls_is_delivered_with_the_host_name_checked(pki) -> None:
    ca, cert, key, _, other = pki
    with mllp_listener(tls=tls_server_context(cert, key)) as (port, received):
        assert "|MSA|AA|PGW1" in "|" + deliver(port, outbound(ca.cert_file)).replace("\r", "|")
        assert [str(m.segment("MSH")(10)) for m in received] == ["PGW1"]
        with pytest.raises(Hl7DeliveryError) as wrong_ca:
            deliver(port, outbound(other.cert_file))
        with pytest.raises(Hl7DeliveryError) as wrong_name:
            deliver(port, outbound(ca.cert_file, outbound_tls_server_name="emr.other.example"))
        assert len(received) == 1
    assert wrong_ca.value.unavailable and wrong_ca.value.reason == (
        f"TLS with 127.0.0.1:{port} failed (certificate verify failed: unable to get local issuer certificate)"
    )
    assert "Hostname mismatch" in wrong_name.value.reason and "emr.other.example" in wrong_name.value.reason


def test_an_emr_that_requires_a_client_certificate_gets_ours(pki) -> None:
    ca, cert, key, ours, _ = pki
    with mllp_listener(tls=tls_server_context(cert, key, client_ca_file=ca.cert_file)) as (port, received):
        with pytest.raises(Hl7DeliveryError) as refused:
            deliver(port, outbound(ca.cert_file))
        assert refused.value.unavailable and refused.value.reason == (
            f"TLS with 127.0.0.1:{port}: closed by the peer after the handshake, without an answer "
            "(does it want a client certificate, or refuse ours? hl7.outbound_tls_cert_file)"
        )
        assert received == []
        deliver(port, outbound(ca.cert_file, outbound_tls_cert_file=str(ours.cert_file), outbound_tls_key_file=str(ours.key_file)))
        assert len(received) == 1


def test_unusable_tls_files_are_refused_with_the_option_named(pki, tmp_path: Path) -> None:
    ca, _, _, ours, _ = pki
    with pytest.raises(TlsConfigError, match=r"ORU\^R01 sender \(hl7.outbound_tls_\*\) CA bundle .*missing.pem"):
        outbound(tmp_path / "missing.pem").outbound_tls_context()
    loose = tmp_path / "loose.key"
    loose.write_bytes(ours.key_file.read_bytes())
    loose.chmod(0o644)
    with pytest.raises(TlsConfigError, match="may be read or changed by other users"):
        outbound(ca.cert_file, outbound_tls_cert_file=str(ours.cert_file), outbound_tls_key_file=str(loose)).outbound_tls_context()


def test_a_wrong_ca_is_retried_from_the_outbox_with_its_reason_then_fixing_it_delivers(pki, tmp_path: Path) -> None:
    ca, cert, key, _, other = pki
    with mllp_listener(tls=tls_server_context(cert, key)) as (port, received):
        env = {
            "PACSGW_HL7_OUTBOUND_HOST": "127.0.0.1", "PACSGW_HL7_OUTBOUND_PORT": str(port), "PACSGW_HL7_OUTBOUND_TLS": "true",
            "PACSGW_HL7_OUTBOUND_TLS_CA_FILE": str(other.cert_file),
            "PACSGW_FHIR_RETRY_INITIAL_SECONDS": "0.2", "PACSGW_FHIR_RETRY_MAX_SECONDS": "0.5",
        }  # fmt: skip
        gateway = GatewayProcess(tmp_path / "data", env)
        gateway.start()
        try:
            series = ct_series(1, size=16, patient=Patient(patient_id="MRN-ORU-TLS"), accession="ACC-ORU-TLS")
            send(gateway, series, tmp_path / "study")
            gateway.wait_idle()
            sign_report(gateway, series[0].StudyInstanceUID)
            retried = wait_for("a retried TLS failure", lambda: [r for r in gateway.get("/emr/outbox?state=failed")[1] if r["attempts"] >= 2])
            assert "certificate verify failed: unable to get local issuer certificate" in retried[0]["last_error"]
            assert received == []
        finally:
            gateway.stop()
        gateway.env["PACSGW_HL7_OUTBOUND_TLS_CA_FILE"] = str(ca.cert_file)
        gateway.start()
        try:
            [delivered] = wait_for("the report delivered", lambda: gateway.get("/emr/outbox?state=delivered")[1])
            assert delivered["kind"] == "diagnostic-report"
            [oru] = received
            assert str(oru.segment("MSH")(9)) == "ORU^R01^ORU_R01" and str(oru.segment("PID")(3)(1)(1)) == "MRN-ORU-TLS"
        finally:
            gateway.kill()
