"""The real client behind a trusted proxy: PROXY protocol headers on DICOM and MLLP, X-Forwarded-For over HTTP.

The parser on its own, then a gateway process that trusts 127.0.0.1 and allows only 127.0.0.2, fed by raw
sockets bound to loopback source addresses: from 127.0.0.1 a header must come first and names the client;
from anyone else a header is just bytes.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from gateway.proxy_protocol import V2_SIGNATURE, ProxyHeaderError, forwarded_client, read_header, trusted_proxies
from tests.gateway.dimse.raw_peer import VERIFICATION, request
from tests.gateway.emr.hl7.messages import Person, adt
from tests.gateway_process import GatewayProcess

PROXY = "127.0.0.1"  # the balancer, as the gateway sees it
ALLOWED, OTHER = "127.0.0.2", "127.0.0.3"


def v2(source: str, *, command: int = 1, family: int | None = None, body: bytes | None = None) -> bytes:
    """A PROXY v2 header from ``source`` (IPv4 or IPv6) to 127.0.0.1:104."""
    if body is None:
        if ":" in source:
            body = socket.inet_pton(socket.AF_INET6, source) + socket.inet_pton(socket.AF_INET6, "::1") + struct.pack("!HH", 40000, 104)
            family = 0x21 if family is None else family
        else:
            body = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 40000, 104)
            family = 0x11 if family is None else family
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family or 0, len(body)) + body


def v1(source: str) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 40000 104\r\n".encode()


def parse(data: bytes) -> tuple[str | None, bytes]:
    """What ``read_header`` makes of ``data``, and what it left on the stream."""

    async def run() -> tuple[str | None, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        client = await read_header(reader)
        return client, await reader.read()

    return asyncio.run(run())


def test_headers_give_the_client_and_leave_the_protocol_unread() -> None:
    assert parse(v2("10.1.2.3") + b"\x01rest") == ("10.1.2.3", b"\x01rest")
    assert parse(v2("2001:db8::7") + b"x") == ("2001:db8::7", b"x")
    assert parse(v2("::ffff:10.0.0.9")) == ("10.0.0.9", b"")
    assert parse(v2("10.1.2.3", command=0)) == (None, b"")  # LOCAL: the proxy's own health check
    tlv = socket.inet_aton("10.1.2.3") + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 1, 2) + b"\x04\x00\x01x"
    assert parse(v2("", family=0x11, body=tlv) + b"y") == ("10.1.2.3", b"y")  # TLVs after the addresses are skipped
    assert parse(v1("10.1.2.3") + b"\x0bMSH") == ("10.1.2.3", b"\x0bMSH")
    assert parse(b"PROXY UNKNOWN\r\nrest") == (None, b"rest")


@pytest.mark.parametrize(
    "data",
    [
        b"\x01\x00\x00\x00\x00\xcc" + b"\x00" * 20,  # an A-ASSOCIATE-RQ: no header
        V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\x00" * 12,  # version 3
        V2_SIGNATURE + b"\x2f\x11\x00\x0c" + b"\x00" * 12,  # command 15
        V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4,  # an IPv4 block too short
        V2_SIGNATURE + b"\x21\x11\xff\xff",  # longer than any header we take
        b"PROXY TCP4 10.1.2.3 127.0.0.1 1\r\n",  # a field missing
        b"PROXY TCP4 not-an-ip 127.0.0.1 1 2\r\n",
        b"PROXY TCP4 2001:db8::1 127.0.0.1 1 2\r\n",  # IPv6 said to be TCP4
        b"PROXY TCP4 " + b"1" * 200,  # no end of line within 107 bytes
    ],
)
def test_malformed_headers_are_refused(data: bytes) -> None:
    with pytest.raises((ProxyHeaderError, asyncio.IncompleteReadError)):
        parse(data)


def test_forwarded_for_counts_only_from_a_trusted_proxy() -> None:
    trusted = trusted_proxies(["127.0.0.1", "10.0.0.0/24"])
    assert forwarded_client("192.0.2.5", ["10.9.9.9"], trusted) == "192.0.2.5"  # not a proxy: its word is not taken
    assert forwarded_client("127.0.0.1", ["10.9.9.9"], trusted) == "10.9.9.9"
    assert forwarded_client("127.0.0.1", ["6.6.6.6, 192.0.2.7"], trusted) == "192.0.2.7"  # the left is the client's word
    assert forwarded_client("127.0.0.1", ["6.6.6.6, 192.0.2.7, 10.0.0.4"], trusted) == "192.0.2.7"  # a chain of ours
    assert forwarded_client("127.0.0.1", ["6.6.6.6", "192.0.2.7"], trusted) == "192.0.2.7"  # two headers, in order
    assert forwarded_client("127.0.0.1", [], trusted) == "127.0.0.1"  # the balancer's own request
    assert forwarded_client("127.0.0.1", ["garbage"], trusted) == "127.0.0.1"
    assert forwarded_client("127.0.0.1", ["::ffff:192.0.2.8"], trusted) == "192.0.2.8"
    assert forwarded_client("127.0.0.1", ["10.9.9.9"], trusted_proxies([])) == "127.0.0.1"  # empty: nobody trusted


# ---------------------------------------------------------------- a gateway behind a trusted proxy


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        tmp_path_factory.mktemp("proxied") / "gw",
        {
            "PACSGW_NETWORK_TRUSTED_PROXIES": PROXY, "PACSGW_DICOM_ALLOWED_PEERS": ALLOWED,
            "PACSGW_HL7_ALLOWED_PEERS": ALLOWED, "PACSGW_DICOM_MAX_CONNECTIONS_PER_PEER": "2",
        },
    )  # fmt: skip
    gw.start()
    yield gw
    gw.kill()


def connect(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def answer(sock: socket.socket) -> bytes:
    """The first bytes the gateway answers with; b"" when it closes the connection."""
    try:
        return sock.recv(1)
    except ConnectionResetError:
        return b""
    finally:
        sock.close()


def associate(gateway: GatewayProcess, source: str, prefix: bytes) -> bytes:
    sock = connect(gateway.dicom_port, source)
    sock.sendall(prefix + request([(VERIFICATION, ExplicitVRLittleEndian)]))
    return answer(sock)


def refused(gateway: GatewayProcess, protocol: str, reason: str) -> float:
    _, text = gateway.get("/metrics")
    found = re.search(rf'pacsgw_proxy_headers_refused_total\{{protocol="{protocol}",reason="{reason}"\}} (\S+)', text)
    return float(found[1]) if found else 0.0


def wait_log(gateway: GatewayProcess, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in gateway.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{text!r} not in the log:\n{gateway.log_tail()}"
        time.sleep(0.05)


def test_dicom_takes_the_client_from_the_header_of_a_trusted_proxy(gateway: GatewayProcess) -> None:
    assert associate(gateway, PROXY, v2(ALLOWED)) == b"\x02"  # A-ASSOCIATE-AC: the client is allowed
    assert associate(gateway, PROXY, v1(ALLOWED)) == b"\x02"
    assert associate(gateway, PROXY, v2(OTHER)) == b"\x03"  # A-ASSOCIATE-RJ: through the proxy, still not allowed
    wait_log(gateway, f"association from {OTHER} refused: address not allowed")
    # The client allowed connecting by itself: untrusted, so a header is not read but taken as a PDU, and fails.
    assert associate(gateway, ALLOWED, v2(ALLOWED)) in (b"", b"\x07")
    assert associate(gateway, ALLOWED, b"") == b"\x02"


def test_the_per_peer_limit_counts_the_clients_behind_the_proxy(gateway: GatewayProcess) -> None:
    held = [connect(gateway.dicom_port, PROXY) for _ in range(2)]
    for sock in held:
        sock.sendall(v2(ALLOWED))  # two connections of 127.0.0.2, waiting for their request
    try:
        deadline = time.monotonic() + 4  # both taken on (their header read) before the third comes
        while "pacsgw_dicom_connections_waiting 2.0" not in gateway.get("/metrics")[1]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        third = connect(gateway.dicom_port, PROXY)
        third.sendall(v2(ALLOWED))
        assert answer(third) == b""  # closed at once: 127.0.0.2 holds its 2
        wait_log(gateway, f"connection from {ALLOWED} closed: that address holds 2 connections")
    finally:
        for sock in held:
            sock.close()


def test_a_trusted_proxy_without_a_valid_header_is_closed_and_counted(gateway: GatewayProcess) -> None:
    before = refused(gateway, "dicom", "malformed")
    assert associate(gateway, PROXY, b"") == b""  # no header: the request itself is not a header
    assert associate(gateway, PROXY, V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\x00" * 12) == b""
    assert refused(gateway, "dicom", "malformed") == before + 2
    log = gateway.log_path.read_text(errors="replace")
    assert f"dicom connection from trusted proxy {PROXY} closed: no PROXY protocol header" in log
    assert "QUIT" not in log  # nothing of what was sent
    silent = connect(gateway.dicom_port, PROXY)  # says nothing: closed once the header's time is up
    started = time.monotonic()
    assert answer(silent) == b"" and time.monotonic() - started < 8
    assert refused(gateway, "dicom", "timeout") >= 1


def mllp(gateway: GatewayProcess, source: str, prefix: bytes, message: str) -> bytes:
    sock = connect(gateway.hl7_port, source)
    sock.sendall(prefix + b"\x0b" + message.encode() + b"\x1c\r")
    received = b""
    try:
        while not received.endswith(b"\x1c\r"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return received


def test_mllp_takes_the_client_from_the_header_and_audits_it(gateway: GatewayProcess) -> None:
    person = Person(mrn="MRN-PROXY-1", family="Tran", given="Van Binh", birth="19700101")
    ack = mllp(gateway, PROXY, v2(ALLOWED), adt("A01", person))
    assert b"MSA|AA" in ack
    events = gateway.audit_events(lambda rows: any(r["action"] == "patient-record" for r in rows))
    assert {r["source"] for r in events if r["action"] == "patient-record"} == {ALLOWED}
    assert mllp(gateway, PROXY, v1(OTHER), adt("A08", person)) == b""  # the client behind the proxy is not allowed
    wait_log(gateway, f"HL7 connection from {OTHER} refused")
    assert mllp(gateway, PROXY, b"", adt("A08", person)) == b""  # no header from the proxy: closed unread
    assert refused(gateway, "hl7", "malformed") >= 1
    # Allowed, but untrusted: its header is data outside an MLLP block, never a message.
    assert b"MSA|AA" not in mllp(gateway, ALLOWED, v1(ALLOWED), adt("A08", person))


def login(gateway: GatewayProcess, source: str, forwarded: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=10, source_address=(source, 0))
    body = json.dumps({"username": "nobody-here", "password": "wrong"})
    conn.request("POST", "/auth/login", body, {"Content-Type": "application/json", "X-Forwarded-For": forwarded})
    status = conn.getresponse().status
    conn.close()
    return status


def test_http_takes_forwarded_for_only_from_a_trusted_proxy(gateway: GatewayProcess) -> None:
    assert login(gateway, PROXY, "6.6.6.6, 192.0.2.44") == 401
    assert login(gateway, ALLOWED, "192.0.2.55") == 401

    def logins(rows: list[dict]) -> set[str]:
        return {r["source"] for r in rows if r["action"] == "login"}

    events = gateway.audit_events(lambda rows: {"192.0.2.44", ALLOWED} <= logins(rows))
    assert not {"6.6.6.6", "192.0.2.55"} & logins(events)  # the client's own word is never taken


def test_the_balancer_check_is_public_and_says_only_that(gateway: GatewayProcess) -> None:
    status, body = gateway.get("/health/ingest", auth=False)
    assert (status, body) == (200, {"ingest": True})


def test_the_balancer_check_fails_when_the_spool_cannot_take_more(tmp_path) -> None:
    from gateway.http.receiving import can_take_instances
    from gateway.ingest.spool import SpoolLog

    def spool(**limits: int) -> SpoolLog:
        where = tmp_path / ("-".join(limits) or "plain")
        return SpoolLog(where, segment_bytes=1 << 20, **{"max_bytes": 1 << 30, "min_free_bytes": 0, **limits}).open()

    assert can_take_instances(spool())
    assert not can_take_instances(spool(max_bytes=0))  # the backlog limit reached
    assert not can_take_instances(spool(min_free_bytes=1 << 62))  # the disk's reserve reached
