"""Slow links: dicom.network_timeout times silence, not how long a PDU or an instance takes to cross."""

from __future__ import annotations

import time

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from gateway.dimse import pdu
from gateway.dimse.find import encode_identifier
from tests.factory import ct_series
from tests.gateway.dimse.raw_peer import LogWindow, RawPeer, command, fragment, stored_large_study
from tests.gateway_process import GatewayProcess

NETWORK_TIMEOUT = 1.5
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    gw = GatewayProcess(
        tmp_path_factory.mktemp("slow") / "gw",
        {"PACSGW_DICOM_NETWORK_TIMEOUT": str(NETWORK_TIMEOUT), "PACSGW_DICOM_QUERY_AETS": "RAW"},
    )
    gw.start()
    yield gw
    gw.kill()


pytestmark = pytest.mark.usefixtures("settled")


def _store_command(ds: Dataset) -> bytes:
    return command(0x0001, 1, with_dataset=True, AffectedSOPClassUID=CTImageStorage,
                   AffectedSOPInstanceUID=ds.SOPInstanceUID, Priority=0)  # fmt: skip


def test_a_store_trickled_over_longer_than_the_timeout_succeeds(gateway: GatewayProcess) -> None:
    (ds,) = ct_series(1, size=64)
    data = fragment(1, encode_identifier(ds, ExplicitVRLittleEndian), command=False, last=True)  # one PDU
    log = LogWindow(gateway)
    with RawPeer(gateway.dicom_port) as peer:
        peer.associate()
        peer.send(fragment(1, _store_command(ds), command=True, last=True))
        started, pieces = time.monotonic(), 12
        step = -(-len(data) // pieces)
        for start in range(0, len(data), step):  # gaps of a third of the timeout; 4 s in all
            peer.send(data[start : start + step])
            time.sleep(NETWORK_TIMEOUT / 3)
        assert time.monotonic() - started > 2 * NETWORK_TIMEOUT
        response, _ = peer.message()
        assert int(response.Status) == 0x0000
    assert log.faults() == []


def test_a_sender_silent_mid_pdu_is_aborted_after_the_timeout(gateway: GatewayProcess) -> None:
    (ds,) = ct_series(1, size=64)
    data = fragment(1, encode_identifier(ds, ExplicitVRLittleEndian), command=False, last=True)
    with RawPeer(gateway.dicom_port) as peer:
        peer.associate()
        peer.send(fragment(1, _store_command(ds), command=True, last=True) + data[: len(data) // 2])
        started = time.monotonic()
        pdu_type, _ = peer.receive()
        waited = time.monotonic() - started
    assert pdu_type == pdu.A_ABORT
    assert NETWORK_TIMEOUT - 0.2 < waited < NETWORK_TIMEOUT + 1.5


def test_a_get_requester_reading_slowly_but_steadily_gets_a_large_instance(gateway: GatewayProcess) -> None:
    identifier = stored_large_study(gateway)  # 8 MiB: longer to read at this pace than the timeout, many times over
    log = LogWindow(gateway)
    with RawPeer(gateway.dicom_port, receive_buffer=65536, pace=(128 << 10, 0.05)) as peer:  # about 2.5 MB/s
        peer.associate([(STUDY_ROOT_GET, ImplicitVRLittleEndian), (CTImageStorage, ExplicitVRLittleEndian)])
        rq = command(0x0010, 1, with_dataset=True, AffectedSOPClassUID=STUDY_ROOT_GET, Priority=0)
        identifier_bytes = encode_identifier(identifier, ImplicitVRLittleEndian)
        peer.send(fragment(1, rq, command=True, last=True) + fragment(1, identifier_bytes, command=False, last=True))
        started = time.monotonic()
        store, dataset = peer.message()
        assert time.monotonic() - started > NETWORK_TIMEOUT
        assert int(store.CommandField) == 0x0001 and dataset is not None and len(dataset) > 8 << 20
        rsp = command(0x8001, 0, AffectedSOPClassUID=CTImageStorage, AffectedSOPInstanceUID=store.AffectedSOPInstanceUID,
                      MessageIDBeingRespondedTo=int(store.MessageID), Status=0)  # fmt: skip
        peer.send(fragment(3, rsp, command=True, last=True))
        final = peer.final_response()
        assert (int(final.Status), int(final.NumberOfCompletedSuboperations)) == (0x0000, 1)
    assert log.faults() == [] and not [line for line in log.warnings() if "stopped reading" in line]
