"""Journey: a node behind the real HAProxy with ``send-proxy-v2`` sees each client's own address.

The node trusts the balancer (``network.trusted_proxies``) and allows one client address, 127.0.0.2, for DICOM
and HL7. Clients bound to 127.0.0.2 and 127.0.0.3 reach it only through HAProxy: the allow-lists, the log and
the audit trail see 127.0.0.2 or 127.0.0.3, never the balancer; HTTP's X-Forwarded-For (``option forwardfor``)
the same. The balancer checks HTTP on ``/health/ingest``.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator

import pytest
from pynetdicom import AE

from tests.gateway.emr.hl7.messages import Person, adt
from tests.gateway_process import GatewayProcess
from tests.peers.haproxy import HAProxy, Node, run_haproxy

ALLOWED, OTHER = "127.0.0.2", "127.0.0.3"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, HAProxy]]:
    tmp = tmp_path_factory.mktemp("balancer")
    node = GatewayProcess(
        tmp / "node",
        {"PACSGW_NETWORK_TRUSTED_PROXIES": "127.0.0.1", "PACSGW_DICOM_ALLOWED_PEERS": ALLOWED, "PACSGW_HL7_ALLOWED_PEERS": ALLOWED},
        workers=2,  # receivers sharing the port (SO_REUSEPORT), each reading its connections' headers
    )
    with run_haproxy(tmp / "haproxy", [Node("n1", node.dicom_port, node.http_port, node.hl7_port)], send_proxy=True) as lb:
        try:
            node.start()
            lb.wait_state({"n1"}, "UP")
            yield node, lb
        finally:
            node.kill()


def echo(lb: HAProxy, source: str) -> tuple[bool, int | None]:
    """Whether an association from ``source`` through the balancer is accepted; the C-ECHO status if so."""
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", lb.dicom_port, ae_title="PACSGW", bind_address=(source, 0))
    if not assoc.is_established:
        return False, None
    status = int(assoc.send_c_echo().Status)
    assoc.release()
    return True, status


def wait_log(node: GatewayProcess, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in (log := node.log_path.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"{text!r} not in the log:\n{node.log_tail()}"
        time.sleep(0.05)
    return log


def test_dicom_through_the_balancer_is_allowed_by_the_client_address(site: tuple[GatewayProcess, HAProxy]) -> None:
    node, lb = site
    assert echo(lb, ALLOWED) == (True, 0)
    assert echo(lb, OTHER) == (False, None)  # HAProxy's address would be allowed-or-not for everyone alike
    log = wait_log(node, f"association from {OTHER} refused: address not allowed")
    assert "association from 127.0.0.1 refused" not in log  # the balancer's health checks are not associations
    assert "trusted proxy" not in log  # every connection HAProxy made began with its header (checks included)


def mllp(port: int, source: str, message: str) -> bytes:
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"\x0b" + message.encode() + b"\x1c\r")
        received = b""
        while not received.endswith(b"\x1c\r"):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return received


def test_hl7_through_the_balancer_is_allowed_and_audited_by_the_client_address(site: tuple[GatewayProcess, HAProxy]) -> None:
    node, lb = site
    person = Person(mrn="MRN-LB-1", family="Pham", given="Thi Lan", birth="19850303")
    assert b"MSA|AA" in mllp(lb.mllp_port, ALLOWED, adt("A01", person))
    assert mllp(lb.mllp_port, OTHER, adt("A08", person)) == b""  # closed unread: an ADT merge needs a named sender
    wait_log(node, f"HL7 connection from {OTHER} refused")
    events = node.audit_events(lambda rows: any(r["action"] == "patient-record" for r in rows))
    assert {r["source"] for r in events if r["action"] == "patient-record"} == {ALLOWED}


def test_http_through_the_balancer_records_the_client_address(site: tuple[GatewayProcess, HAProxy]) -> None:
    node, lb = site
    for source in (ALLOWED, OTHER):
        conn = http.client.HTTPConnection("127.0.0.1", lb.http_port, timeout=10, source_address=(source, 0))
        conn.request("POST", "/auth/login", json.dumps({"username": "nobody", "password": "x"}), {"Content-Type": "application/json", "X-Forwarded-For": "6.6.6.6"})
        assert conn.getresponse().status == 401
        conn.close()
    events = node.audit_events(lambda rows: {ALLOWED, OTHER} <= {r["source"] for r in rows if r["action"] == "login"})
    assert not {"127.0.0.1", "6.6.6.6"} & {r["source"] for r in events if r["action"] == "login"}
    check = http.client.HTTPConnection("127.0.0.1", lb.http_port, timeout=10)
    check.request("GET", "/health/ingest")
    answer = check.getresponse()
    assert (answer.status, json.loads(answer.read())) == (200, {"ingest": True})
