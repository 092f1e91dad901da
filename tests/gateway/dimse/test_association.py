"""The acceptor against well-behaved and misbehaving peers, down to raw PDUs."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import threading

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.pdu import A_ASSOCIATE_AC
from pynetdicom.sop_class import CTImageStorage, UnifiedProcedureStepPull

from gateway.dimse import pdu
from gateway.dimse.commands import encode_command
from gateway.dimse.part10 import file_meta
from tests.factory import ct_series, to_bytes, write_files
from tests.gateway.dimse.raw_peer import RawPeer, request, wait_settled
from tests.peers.orthanc import DCMTK_ENV, dcmtk_binary


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    from tests.gateway_process import GatewayProcess

    gw = GatewayProcess(tmp_path_factory.mktemp("assoc") / "gw", {"PACSGW_DICOM_MAX_ASSOCIATIONS": "3"})
    gw.start()
    yield gw
    gw.kill()


def test_garbage_instead_of_a_request_is_aborted(gateway) -> None:
    with RawPeer(gateway.dicom_port) as peer:
        peer.send(b"\x09\x00\x00\x00\x00\x04abcd")
        pdu_type, body = peer.receive()
        assert pdu_type == pdu.A_ABORT and body[3] == pdu.REASON_UNRECOGNISED_PDU


def test_data_on_an_unaccepted_context_is_aborted(gateway) -> None:
    with RawPeer(gateway.dicom_port) as peer:
        peer.associate()
        peer.send(pdu.p_data(99, b"\x00" * 8, command=True, max_pdu=0))
        assert peer.receive()[0] == pdu.A_ABORT
        assert peer.closed()


def test_unsupported_operation_gets_a_status_not_silence(gateway) -> None:
    with RawPeer(gateway.dicom_port) as peer:
        peer.associate()
        command = Dataset()
        command.AffectedSOPClassUID = CTImageStorage
        command.CommandField = 0x0ABC  # an operation nobody defined
        command.MessageID = 7
        command.CommandDataSetType = 0x0101
        peer.send(pdu.p_data(1, encode_command(command), command=True, max_pdu=0))
        pdu_type, body = peer.receive()
        assert pdu_type == pdu.P_DATA_TF
        response = dcmread(io.BytesIO(body[6:]), force=True)
        assert response.Status == 0x0211 and response.MessageIDBeingRespondedTo == 7
        peer.send(struct.pack(">BxI", pdu.A_RELEASE_RQ, 4) + bytes(4))
        assert peer.receive()[0] == pdu.A_RELEASE_RP


def test_peer_vanishing_mid_dataset_stores_nothing(gateway) -> None:
    ds = ct_series(1, size=64)[0]
    body = to_bytes(ds)[144 + int.from_bytes(to_bytes(ds)[140:144], "little") :]
    peer = RawPeer(gateway.dicom_port)
    peer.associate()
    command = Dataset()
    command.AffectedSOPClassUID = CTImageStorage
    command.CommandField = 0x0001
    command.MessageID = 1
    command.Priority = 0
    command.CommandDataSetType = 0x0000
    command.AffectedSOPInstanceUID = ds.SOPInstanceUID
    peer.send(pdu.p_data(1, encode_command(command), command=True, max_pdu=0))
    half = pdu.p_data(1, body[: len(body) // 2], command=False, max_pdu=0)
    peer.send(half[:6] + half[6:10] + bytes([1, 0]) + half[12:])  # a fragment that is not the last
    peer.sock.close()
    gateway.wait_idle()
    assert ds.SOPInstanceUID not in {r["sop_instance_uid"] for r in gateway.open_index().all_instances()}


def test_unsupported_contexts_are_refused_one_by_one(gateway) -> None:
    with RawPeer(gateway.dicom_port) as peer:
        peer.send(
            request(
                [
                    (UnifiedProcedureStepPull, ImplicitVRLittleEndian),  # a service the gateway does not offer
                    (CTImageStorage, "1.2.3.4.999"),  # a transfer syntax nobody knows
                    (CTImageStorage, ExplicitVRLittleEndian),
                ]
            )
        )
        pdu_type, body = peer.receive()
    assert pdu_type == pdu.A_ASSOCIATE_AC
    ac = A_ASSOCIATE_AC()
    ac.decode(struct.pack(">BxI", pdu_type, len(body)) + body)
    results = {cx.context_id: cx.result for cx in ac.to_primitive().presentation_context_definition_results_list}
    assert results == {1: 0x03, 3: 0x04, 5: 0x00}  # abstract syntax / transfer syntax not supported, accepted


def test_association_limit_refuses_transiently(gateway) -> None:
    wait_settled(gateway)  # connections of earlier tests in this module are gone
    holders = [RawPeer(gateway.dicom_port) for _ in range(3)]
    for holder in holders:
        holder.associate()
    try:
        with RawPeer(gateway.dicom_port) as extra:
            extra.send(request([(CTImageStorage, ExplicitVRLittleEndian)]))
            pdu_type, body = extra.receive()
            assert pdu_type == pdu.A_ASSOCIATE_RJ and tuple(body[1:4]) == (0x02, 0x03, 0x02)
    finally:
        for holder in holders:
            holder.sock.close()
    wait_settled(gateway)  # the gateway has seen the holders go before the next test associates


def test_small_pdus_from_the_sender_reassemble(gateway, tmp_path) -> None:
    series = ct_series(3, size=128)
    files = write_files(series, tmp_path / "ct")
    result = subprocess.run(
        [dcmtk_binary("storescu"), "--max-send-pdu", "4096", "-aec", "PACSGW", "127.0.0.1", str(gateway.dicom_port), *map(str, files)],
        env={**os.environ, **DCMTK_ENV}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    gateway.wait_idle()
    stored = {r["sop_instance_uid"] for r in gateway.open_index().all_instances()}
    assert {ds.SOPInstanceUID for ds in series} <= stored


def test_concurrent_associations_are_all_served(gateway) -> None:
    wait_settled(gateway)  # as many slots free as there are senders below
    series = ct_series(24, size=32)
    statuses: list[int] = []
    lock = threading.Lock()

    def send(part) -> None:
        ae = AE(ae_title="PAR")
        ae.add_requested_context(CTImageStorage, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
        assoc = ae.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
        for ds in part:
            with lock:
                statuses.append(assoc.send_c_store(ds).Status)
        assoc.release()

    threads = [threading.Thread(target=send, args=(series[i::3],)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [0] * 24


def test_file_meta_reads_back() -> None:
    meta = file_meta("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5", "1.2.840.10008.1.2.4.90", "CT01")
    ds = dcmread(io.BytesIO(meta + b""), force=True)
    fm = ds.file_meta
    assert (fm.MediaStorageSOPClassUID, fm.MediaStorageSOPInstanceUID) == ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5")
    assert fm.TransferSyntaxUID == "1.2.840.10008.1.2.4.90" and fm.SourceApplicationEntityTitle == "CT01"
    assert fm.FileMetaInformationGroupLength == len(meta) - 144


def test_responses_fragment_to_the_peer_maximum() -> None:
    payload = bytes(range(256)) * 40
    stream = pdu.p_data(3, payload, command=True, max_pdu=4096)
    offset, fragments = 0, []
    while offset < len(stream):
        length = struct.unpack_from(">I", stream, offset + 2)[0]
        assert length <= 4096
        whole = stream[offset : offset + 6 + length]
        fragments += list(pdu.iter_pdvs(whole))
        offset += 6 + length
    assert b"".join(bytes(f) for _, _, f in fragments) == payload
    assert [c & pdu.LAST_FRAGMENT for _, c, _ in fragments][-1] and not any(
        c & pdu.LAST_FRAGMENT for _, c, _ in fragments[:-1]
    )
