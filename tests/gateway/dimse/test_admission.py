"""Connections and association slots under floods: silent sockets, one busy address, many addresses, slow requests."""

from __future__ import annotations

import threading
import time

import pytest

from gateway.dimse import pdu
from gateway.settings import SettingsError, load_settings
from tests.gateway.dimse.raw_peer import VERIFICATION, LogWindow, RawPeer, echo, request, until
from tests.gateway_process import GatewayProcess

REQUEST_TIMEOUT = 1.5
PER_PEER = 10
WAITING = 16


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    gw = GatewayProcess(
        tmp_path_factory.mktemp("admission") / "gw",
        {
            "PACSGW_DICOM_MAX_ASSOCIATIONS": "4",
            "PACSGW_DICOM_RESERVED_ASSOCIATIONS": "2",
            "PACSGW_DICOM_ALLOWED_CALLING_AETS": "CT01,MR01,*",
            "PACSGW_DICOM_MAX_CONNECTIONS_PER_PEER": str(PER_PEER),
            "PACSGW_DICOM_MAX_WAITING_CONNECTIONS": str(WAITING),
            "PACSGW_DICOM_ASSOCIATION_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
            "PACSGW_DICOM_NETWORK_TIMEOUT": "6",
            "PACSGW_DICOM_ALLOWED_PEERS": "127.0.0.0/28",  # the addresses the tests send from; 127.0.0.20 and up are not
        },
    )
    gw.start()
    yield gw
    gw.kill()


pytestmark = pytest.mark.usefixtures("settled")


def _open(port: int, count: int, source=lambda i: "127.0.0.1") -> list[RawPeer]:
    return [RawPeer(port, source=source(i)) for i in range(count)]


def _close(peers: list[RawPeer]) -> None:
    for peer in peers:
        peer.close()


def test_silent_connections_do_not_lock_out_a_sender(gateway: GatewayProcess) -> None:
    log = LogWindow(gateway)
    silent = _open(gateway.dicom_port, 8)  # twice max_associations, from the sender's own address
    opened = time.monotonic()
    try:
        started = time.monotonic()
        assert echo(gateway.dicom_port, "CT01") == 0
        assert time.monotonic() - started < 2.0
        # Closed once the request timeout passes: not before, not 30 s later.
        assert all(peer.is_open() for peer in silent)
        assert all(peer.closed_within(opened + REQUEST_TIMEOUT + 3.0 - time.monotonic()) for peer in silent)
    finally:
        _close(silent)
    assert any("no A-ASSOCIATE-RQ within 1.5 s" in line for line in log.warnings())
    assert log.faults() == []


def test_a_flood_from_one_address_does_not_lock_out_another(gateway: GatewayProcess) -> None:
    flood = _open(gateway.dicom_port, 25, source=lambda i: "127.0.0.2")
    try:
        # Beyond the per-peer share, connections are closed at once, long before the request timeout.
        assert until(lambda: sum(peer.is_open() for peer in flood) == PER_PEER, timeout=1.0)
        assert echo(gateway.dicom_port, "CT01", source="127.0.0.1") == 0
        with RawPeer(gateway.dicom_port, source="127.0.0.2", timeout=2) as late:
            with pytest.raises(ConnectionError):
                late.send(request([(VERIFICATION, "1.2.840.10008.1.2")], calling="CT01"))
                late.receive()
    finally:
        _close(flood)


def test_waiting_connections_are_bounded_across_addresses(gateway: GatewayProcess) -> None:
    log = LogWindow(gateway)
    # Each address stays under its share; together they are more than may wait.
    flood = _open(gateway.dicom_port, 30, source=lambda i: f"127.0.0.{3 + i % 6}")
    try:
        assert until(lambda: sum(peer.is_open() for peer in flood) <= WAITING, timeout=1.0)
        assert not flood[0].is_open() and flood[-1].is_open()  # the longest waiting made room
        assert echo(gateway.dicom_port, "CT01") == 0
    finally:
        _close(flood)
    assert any("dicom.max_waiting_connections" in line for line in log.warnings())


def test_peers_not_allowed_are_closed_at_once_and_push_no_one_out(gateway: GatewayProcess) -> None:
    log = LogWindow(gateway)
    waiting = RawPeer(gateway.dicom_port)  # allowed, slow to send its request
    # From addresses outside dicom.allowed_peers, each under its share, together more than may wait.
    strangers = _open(gateway.dicom_port, 2 * WAITING, source=lambda i: f"127.0.0.{20 + i % 8}")
    try:
        # Answered or closed within half the request timeout, never held as long as a waiting connection.
        assert until(lambda: not any(peer.is_open() for peer in strangers), timeout=0.6 * REQUEST_TIMEOUT)
        assert waiting.is_open()
        waiting.associate([(VERIFICATION, "1.2.840.10008.1.2")], calling="CT01")
    finally:
        _close(strangers)
        waiting.close()
    assert any("dicom.allowed_peers" in line for line in log.warnings())
    assert not any("dicom.max_waiting_connections" in line for line in log.warnings())


def test_a_request_sent_byte_by_byte_is_cut_off_at_the_request_timeout(gateway: GatewayProcess) -> None:
    data = request([(VERIFICATION, "1.2.840.10008.1.2")], calling="CT01")
    peer = RawPeer(gateway.dicom_port)
    stop = threading.Event()

    def drip() -> None:
        for i in range(len(data)):
            if stop.wait(0.05):
                return
            try:
                peer.send(data[i : i + 1])
            except OSError:
                return

    dripping = threading.Thread(target=drip)
    started = time.monotonic()
    dripping.start()
    try:
        assert peer.closed_within(REQUEST_TIMEOUT + 1.5)
        assert time.monotonic() - started >= REQUEST_TIMEOUT - 0.2
    finally:
        stop.set()
        dripping.join()
        peer.close()


def test_reserved_slots_go_to_the_listed_calling_titles(gateway: GatewayProcess) -> None:
    held: list[RawPeer] = []
    context = [(VERIFICATION, "1.2.840.10008.1.2")]

    def refused(calling: str) -> tuple[int, ...]:
        with RawPeer(gateway.dicom_port) as peer:
            peer.send(request(context, calling=calling))
            pdu_type, body = peer.receive()
            assert pdu_type == pdu.A_ASSOCIATE_RJ
            return tuple(body[1:4])

    try:
        for calling in ("ANY1", "ANY2"):  # admitted by `*`, up to max_associations - reserved_associations
            held.append(RawPeer(gateway.dicom_port))
            held[-1].associate(context, calling=calling)
        assert refused("ANY3") == (0x02, 0x03, 0x02)  # transient: local limit exceeded
        for calling in ("CT01", "MR01"):  # the reserve
            held.append(RawPeer(gateway.dicom_port))
            held[-1].associate(context, calling=calling)
        assert refused("CT01") == (0x02, 0x03, 0x02)  # now every slot is taken
    finally:
        _close(held)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PACSGW_DICOM_ASSOCIATION_REQUEST_TIMEOUT", "0", "must be positive"),
        ("PACSGW_DICOM_MAX_MESSAGE_BYTES", "1000", "at least 65536"),
        ("PACSGW_DICOM_MAX_WAITING_CONNECTIONS", "0", "at least 1"),
        ("PACSGW_DICOM_MAX_CONNECTIONS_PER_PEER", "-1", "must not be negative"),
        ("PACSGW_DICOM_RESERVED_ASSOCIATIONS", "-2", "must not be negative"),
    ],
)
def test_bad_limits_stop_the_start(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(environ={variable: value})
