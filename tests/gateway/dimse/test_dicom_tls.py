"""The DICOM TLS SCP (PS3.15 Annex B) against DCMTK +tls and sslyze: only the TLS port open, client certificates
required and bound to calling AE titles, a trusted proxy's PROXY header before the handshake."""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path

import pytest

from gateway.dimse import pdu
from gateway.tls import client_context
from tests.factory import ct_series, write_files
from tests.gateway.dimse.raw_peer import VERIFICATION, LogWindow, request, until
from tests.gateway.dimse.tls_peer import Pki, TlsPipe, dcmtk, tls_options
from tests.peers.ports import free_port
from tests.peers.tls_scan import scan

PROXY = "127.0.0.2"  # network.trusted_proxies: its connections start with a PROXY header


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, pki: Pki):
    """DICOM over TLS only: client certificates required, CT01's for CT01, mr01.hospital.lan's for MR01 and MR02."""
    from tests.gateway_process import GatewayProcess

    gw = GatewayProcess(tmp_path_factory.mktemp("tls") / "gw", {})
    gw.tls_port = free_port()  # type: ignore[attr-defined]
    gw.env.update(
        {
            "PACSGW_DICOM_TLS_PORT": str(gw.tls_port),  # type: ignore[attr-defined]
            "PACSGW_DICOM_TLS_PLAIN": "false",
            "PACSGW_DICOM_TLS_CERTIFICATE_FILE": str(pki.server.cert_file),
            "PACSGW_DICOM_TLS_PRIVATE_KEY_FILE": str(pki.server.key_file),
            "PACSGW_DICOM_TLS_CLIENT_CA_FILE": str(pki.ca.cert_file),
            "PACSGW_DICOM_TLS_REQUIRE_CLIENT_CERTIFICATE": "true",
            "PACSGW_DICOM_TLS_CLIENT_AETS": "CT01=CT01,MR01.hospital.lan=MR01,mr01.hospital.lan=MR02",
            "PACSGW_DICOM_QUERY_AETS": "CT01",
            "PACSGW_NETWORK_TRUSTED_PROXIES": f"{PROXY}/32",
            "PACSGW_DICOM_ALLOWED_PEERS": f"127.0.0.1/32,{PROXY}/32,10.9.8.7/32",
        }
    )
    gw.start()
    yield gw
    gw.kill()


def refused(gateway, reason: str) -> float:
    status, text = gateway.get("/metrics")
    assert status == 200
    found = re.search(rf'^pacsgw_dicom_connections_refused_total{{reason="{reason}"}} (\S+)$', text, re.M)
    return float(found[1]) if found else 0.0


def echo(gateway, pki: Pki, client, calling: str) -> str:
    result = dcmtk("echoscu", *tls_options(pki, client), "-aet", calling, "-aec", "PACSGW", "localhost", str(gateway.tls_port))
    return "ok" if result.returncode == 0 else result.stderr


def test_plain_port_closed_when_tls_only(gateway) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", gateway.dicom_port), timeout=5).close()


def test_store_find_and_echo_with_client_certificates(gateway, pki: Pki, tmp_path: Path) -> None:
    assert echo(gateway, pki, pki.ct01, "CT01") == "ok"
    assert echo(gateway, pki, pki.mr01, "MR02") == "ok"  # by its DNS name, any case
    series = ct_series(3, size=32)
    files = write_files(series, tmp_path / "files")
    stored = dcmtk("storescu", *tls_options(pki, pki.ct01), "-aet", "CT01", "-aec", "PACSGW", "localhost",
                   str(gateway.tls_port), *map(str, files))  # fmt: skip
    assert stored.returncode == 0, stored.stderr
    gateway.wait_idle()
    out = tmp_path / "found"
    out.mkdir()
    found = dcmtk(
        "findscu", *tls_options(pki, pki.ct01), "-aet", "CT01", "-aec", "PACSGW", "-S", "-X", "-od", str(out),
        "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={series[0].StudyInstanceUID}",
        "-k", "SeriesInstanceUID", "-k", "NumberOfSeriesRelatedInstances", "localhost", str(gateway.tls_port),
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    from pydicom import dcmread

    [answer] = [dcmread(f) for f in out.iterdir()]
    assert answer.SeriesInstanceUID == series[0].SeriesInstanceUID and int(answer.NumberOfSeriesRelatedInstances) == 3


def test_no_client_certificate_or_an_untrusted_one_fails_the_handshake(gateway, pki: Pki) -> None:
    before = refused(gateway, "tls_handshake")
    log = LogWindow(gateway)
    assert echo(gateway, pki, None, "CT01") != "ok"
    assert echo(gateway, pki, pki.stranger, "CT01") != "ok"
    assert until(lambda: refused(gateway, "tls_handshake") == before + 2, 5)
    lines = [line for line in log.warnings() if "handshake failed" in line]  # at most one every few seconds
    assert lines and all("127.0.0.1" in line for line in lines), log.lines()
    assert not log.faults()
    assert echo(gateway, pki, pki.ct01, "CT01") == "ok"  # the listener goes on


def test_a_certificate_calling_as_another_ae_title_is_rejected_and_audited(gateway, pki: Pki) -> None:
    log = LogWindow(gateway)
    answer = echo(gateway, pki, pki.ct01, "MR01")
    assert "Association Rejected" in answer and "Calling AE Title Not Recognized" in answer, answer
    assert "Calling AE Title Not Recognized" in echo(gateway, pki, pki.mr01, "CT01")
    assert any("MR01 refused on the TLS port" in line for line in log.warnings())

    def audited() -> list[dict]:
        status, rows = gateway.get("/audit?limit=50")
        assert status == 200
        return [r for r in rows if r["action"] == "associate" and "calling AE title not recognized" in r["target"]]

    assert until(lambda: {r["username"] for r in audited()} >= {"MR01", "CT01"}, 5), audited()


def test_proxy_header_and_client_hello_in_one_segment(gateway, pki: Pki) -> None:
    """A trusted proxy's PROXY header is read before the handshake, even with the ClientHello right behind it;
    the association is then the proxied client's (the refusal's audit names its address)."""
    context = client_context(ca_file=str(pki.ca.cert_file), cert_file=str(pki.ct01.cert_file), key_file=str(pki.ct01.key_file))
    header = b"PROXY TCP4 10.9.8.7 127.0.0.1 40000 2762\r\n"
    for calling, expected in (("CT01", pdu.A_ASSOCIATE_AC), ("MR01", pdu.A_ASSOCIATE_RJ)):
        peer = TlsPipe(gateway.tls_port, context, before=header, source=PROXY)
        try:
            assert peer.tls.version() in ("TLSv1.2", "TLSv1.3")
            peer.send(request([(VERIFICATION, "1.2.840.10008.1.2")], calling=calling))
            assert peer.receive()[0] == expected
        finally:
            peer.close()

    def from_proxied() -> bool:
        status, rows = gateway.get("/audit?limit=50&user=MR01")
        return any(r["source"] == "10.9.8.7" for r in rows)

    assert until(from_proxied, 5)


def test_sslyze_finds_the_bcp195_profile(gateway, pki: Pki) -> None:
    result = scan(gateway.tls_port, ca_file=pki.ca.cert_file, client_cert=pki.ct01.cert_file, client_key=pki.ct01.key_file)
    result.assert_bcp195()
    assert result.suites["TLS 1.2"] and result.suites["TLS 1.3"]  # DCMTK's BCP 195 profile speaks TLS 1.2


def test_handshake_without_the_ca_refuses_the_gateway(gateway, pki: Pki) -> None:
    """The other way round: a client that does not trust the gateway's CA gives up (nothing is sent in clear)."""
    context = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        TlsPipe(gateway.tls_port, context)


def test_an_address_not_allowed_is_answered_over_tls(gateway, pki: Pki) -> None:
    """dicom.allowed_peers holds on the TLS port too: the refusal is an A-ASSOCIATE-RJ inside TLS, not a reset."""
    context = client_context(ca_file=str(pki.ca.cert_file), cert_file=str(pki.ct01.cert_file), key_file=str(pki.ct01.key_file))
    peer = TlsPipe(gateway.tls_port, context, source="127.0.0.3")
    try:
        peer.send(request([(VERIFICATION, "1.2.840.10008.1.2")], calling="CT01"))
        pdu_type, body = peer.receive()
        assert pdu_type == pdu.A_ASSOCIATE_RJ and body[1:] == bytes((1, 1, 1))
    finally:
        peer.close()
