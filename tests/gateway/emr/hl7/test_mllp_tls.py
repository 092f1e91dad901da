"""MLLP over TLS on the gateway's HL7 port, through a real gateway process: python-hl7's MLLP client over TLS
(Python's ``ssl``) sends ADT and ORM and gets its ACKs; without a client certificate from the right CA, or in
clear, it is refused and the listener goes on; sslyze sees BCP 195 only; SIGHUP swaps the certificate; behind
HAProxy sending a PROXY v2 header before the handshake it works too."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from gateway.tls_certs import IssuedCertificate, TrialCa, write_trial_set
from tests.gateway.emr.hl7.client import ack_code, send
from tests.gateway.emr.hl7.messages import Order, Person, adt, orm
from tests.gateway_process import GatewayProcess
from tests.peers.haproxy import Node, run_haproxy
from tests.peers.postgres import PostgresServer
from tests.peers.tls_scan import scan

PERSON = Person(mrn="MRN-TLS-1", family="Phạm", given="Thị Tâm")
REFUSED = (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError, TimeoutError)


@dataclass(frozen=True)
class Pki:
    ca: TrialCa
    server: IssuedCertificate
    emr: IssuedCertificate  # a client certificate from our CA
    stranger: IssuedCertificate  # a client certificate from another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, server = write_trial_set(folder, ["localhost", "127.0.0.1"])
    emr = ca.issue(folder, "emr", "EMR-BVCR", client=True)
    stranger = TrialCa.create(folder / "other", "Another CA").issue(folder / "other", "stranger", "EMR-BVCR", client=True)
    return Pki(ca, server, emr, stranger)


def client(pki: Pki, shown: IssuedCertificate | None = None) -> ssl.SSLContext:
    """The EMR's side: Python's defaults for a client, our CA trusted, ``shown`` as its certificate."""
    context = ssl.create_default_context(cafile=pki.ca.cert_file)
    if shown is not None:
        context.load_cert_chain(shown.cert_file, shown.key_file)
    return context


def tls_env(pki: Pki, *, require: bool = True) -> dict[str, str]:
    return {
        "PACSGW_HL7_TLS_CERT_FILE": str(pki.server.cert_file),
        "PACSGW_HL7_TLS_KEY_FILE": str(pki.server.key_file),
        "PACSGW_HL7_TLS_CLIENT_CA_FILE": str(pki.ca.cert_file),
        "PACSGW_HL7_TLS_REQUIRE_CLIENT_CERT": "true" if require else "false",
    }


def wait_listening(port: int, timeout: float = 60.0) -> None:
    """The HL7 process takes the site lease after the HTTP side is ready: poll until the port accepts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"HL7 port {port} not listening within {timeout} s")


def served_certificate(port: int, pki: Pki) -> x509.Certificate:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with client(pki, pki.emr).wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[GatewayProcess]:
    """A gateway under its supervisor (2 workers and the HL7 process), its HL7 port on mutual TLS."""
    gateway = GatewayProcess(tmp_path_factory.mktemp("gw") / "data", tls_env(pki), workers=2)
    try:
        gateway.start()
        wait_listening(gateway.hl7_port)
        yield gateway
    finally:
        gateway.kill()


def test_adt_and_orm_over_mutual_tls_get_their_acks(supervised: GatewayProcess, pki: Pki) -> None:
    acks = send(supervised.hl7_port, adt("A04", PERSON), orm("NW", PERSON, Order("PL-TLS-1", "ACC-TLS-1")), tls=client(pki, pki.emr))
    assert [ack_code(a) for a in acks] == ["AA", "AA"]
    assert "HL7 connection from 127.0.0.1 over TLSv1.3, certificate EMR-BVCR" in supervised.log_path.read_text()


def test_without_the_right_client_certificate_or_tls_it_is_refused_and_the_listener_goes_on(supervised: GatewayProcess, pki: Pki) -> None:
    port = supervised.hl7_port
    for context in (client(pki), client(pki, pki.stranger), None):  # no certificate, another CA's, plain MLLP
        with pytest.raises(REFUSED):
            send(port, adt("A08", PERSON), tls=context)
    reasons = ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_VERIFY_FAILED", "WRONG_VERSION_NUMBER")
    deadline = time.monotonic() + 10
    while not all(f"HL7 TLS handshake with 127.0.0.1 failed ({r})" in (log := supervised.log_path.read_text()) for r in reasons):
        assert time.monotonic() < deadline, log[-3000:]
        time.sleep(0.1)
    assert PERSON.mrn not in log and PERSON.family not in log  # no PHI, whatever was sent
    [ack] = send(port, adt("A08", PERSON), tls=client(pki, pki.emr))
    assert ack_code(ack) == "AA"
    _, metrics = supervised.get("/metrics")
    [count] = [line.split()[-1] for line in metrics.splitlines() if line.startswith("pacsgw_hl7_tls_handshakes_failed_total")]
    assert float(count) >= 3


def test_a_peer_that_never_shakes_hands_is_cut_off(supervised: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", supervised.hl7_port), timeout=30) as silent:
        started = time.monotonic()
        assert silent.recv(1) == b""  # closed by the gateway, not by us
    assert 9 < time.monotonic() - started < 20
    deadline = time.monotonic() + 5
    while "HL7 TLS handshake with 127.0.0.1 failed (none within 10 s)" not in supervised.log_path.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_sslyze_sees_bcp195_only_on_the_mllp_port(supervised: GatewayProcess, pki: Pki) -> None:
    found = scan(supervised.hl7_port, ca_file=pki.ca.cert_file, client_cert=pki.emr.cert_file, client_key=pki.emr.key_file)
    found.assert_bcp195()
    assert found.suites["TLS 1.3"]


def test_sighup_makes_the_listener_show_a_new_certificate(supervised: GatewayProcess, pki: Pki, tmp_path: Path) -> None:
    before = served_certificate(supervised.hl7_port, pki)
    renewed = pki.ca.issue(tmp_path, "renewed", "localhost", hosts=["localhost", "127.0.0.1"])
    shutil.copyfile(renewed.cert_file, pki.server.cert_file)
    shutil.copyfile(renewed.key_file, pki.server.key_file)  # copyfile keeps the destination's mode (0600)
    assert supervised.proc is not None
    os.kill(supervised.proc.pid, signal.SIGHUP)  # the supervisor passes it to the HL7 process
    wanted = x509.load_pem_x509_certificate(renewed.cert_file.read_bytes()).serial_number
    deadline = time.monotonic() + 15
    while (serial := served_certificate(supervised.hl7_port, pki).serial_number) != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    assert serial == wanted != before.serial_number
    [ack] = send(supervised.hl7_port, adt("A08", PERSON), tls=client(pki, pki.emr))
    assert ack_code(ack) == "AA"


def test_behind_haproxy_the_proxy_header_comes_before_the_handshake(tmp_path: Path, pki: Pki) -> None:
    gateway = GatewayProcess(tmp_path / "data", {**tls_env(pki, require=False), "PACSGW_NETWORK_TRUSTED_PROXIES": "127.0.0.1"})
    node = Node("n1", gateway.dicom_port, gateway.http_port, gateway.hl7_port)
    with run_haproxy(tmp_path / "lb", [node], send_proxy=True) as lb:
        gateway.start()
        try:
            lb.wait_state({"n1"}, "UP", backends=("mllp",))
            acks = send(lb.mllp_port, adt("A04", PERSON), orm("NW", PERSON, Order("PL-TLS-2", "ACC-TLS-2")), tls=client(pki, pki.emr))
            assert [ack_code(a) for a in acks] == ["AA", "AA"]
            [ack] = send(lb.mllp_port, adt("A08", PERSON), tls=client(pki))  # the client certificate is optional here
            assert ack_code(ack) == "AA"
            with pytest.raises(REFUSED):  # straight from a trusted proxy's address, without its header
                send(gateway.hl7_port, adt("A08", PERSON), tls=client(pki, pki.emr))
            log = gateway.log_path.read_text()
            assert "HL7 connection from 127.0.0.1 over TLSv1.3, certificate EMR-BVCR" in log
        finally:
            gateway.kill()


def test_a_stranger_is_refused_before_the_handshake_and_a_loose_key_stops_the_start(tmp_path: Path, pki: Pki) -> None:
    loose = tmp_path / "loose.key"
    loose.write_bytes(pki.server.key_file.read_bytes())
    loose.chmod(0o640)
    loose_env = {**tls_env(pki), "PACSGW_HL7_TLS_KEY_FILE": str(loose)}
    for workers in (2, 1):  # under the supervisor (before any child starts) and in one process
        gateway = GatewayProcess(tmp_path / f"data-{workers}", loose_env, workers=workers)
        try:
            with pytest.raises(RuntimeError, match=r"cannot start: HL7 listener \(hl7.tls_\*\) private key .*loose.key may be read"):
                gateway.start()
        finally:
            gateway.kill()  # should it have started after all
    gateway.env.update({**tls_env(pki), "PACSGW_HL7_ALLOWED_PEERS": "10.9.9.9"})  # loopback is not named
    gateway.start()
    try:
        wait_listening(gateway.hl7_port)
        with pytest.raises(REFUSED):
            send(gateway.hl7_port, adt("A08", PERSON), tls=client(pki, pki.emr))
        deadline = time.monotonic() + 5
        while "HL7 connection from 127.0.0.1 refused: address not allowed" not in (log := gateway.log_path.read_text()):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert "HL7 TLS handshake" not in log and "over TLSv" not in log  # no TLS work for a stranger
    finally:
        gateway.kill()


def test_mllp_over_tls_moves_with_the_site_lease(tmp_path: Path, pki: Pki, postgres_server: PostgresServer) -> None:
    """Two nodes on one index: the lease holder speaks TLS; SIGKILLed, the other node takes the lease and does."""
    url = postgres_server.create_database(f"tls_{uuid.uuid4().hex[:10]}")
    cluster = {"PACSGW_INDEX_URL": url, "PACSGW_CLUSTER_HEARTBEAT_SECONDS": "0.25", "PACSGW_CLUSTER_LEASE_SECONDS": "1.5"}
    a = GatewayProcess(tmp_path / "a", {**tls_env(pki), **cluster, "PACSGW_CLUSTER_NODE_NAME": "node-a"})
    b = GatewayProcess(tmp_path / "b", {**tls_env(pki), **cluster, "PACSGW_CLUSTER_NODE_NAME": "node-b"})
    try:
        a.start()
        wait_listening(a.hl7_port)
        b.start()
        assert [ack_code(x) for x in send(a.hl7_port, adt("A04", PERSON), tls=client(pki, pki.emr))] == ["AA"]
        with pytest.raises(OSError):  # one listener per site: B does not listen while A holds the lease
            socket.create_connection(("127.0.0.1", b.hl7_port), timeout=1).close()
        a.kill()
        wait_listening(b.hl7_port, timeout=30)
        assert [ack_code(x) for x in send(b.hl7_port, adt("A08", PERSON), tls=client(pki, pki.emr))] == ["AA"]
        with pytest.raises(REFUSED):
            send(b.hl7_port, adt("A08", PERSON), tls=client(pki))  # the new holder requires the certificate too
    finally:
        a.kill()
        b.kill()
