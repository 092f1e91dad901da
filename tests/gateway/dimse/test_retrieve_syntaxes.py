"""C-MOVE and C-GET to peers that take fewer transfer syntaxes than the archive holds, and retrieves that fail midway.

Sources are stored uncompressed, JPEG Baseline, JPEG 2000 and RLE; the
destinations are DCMTK storescp (implicit VR only, default, big endian
preferred) and a pynetdicom C-GET requester offering implicit VR only. What
arrives must decode to the same pixels as the source.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from tests.compressed import four_syntaxes, store_as_encoded
from tests.factory import ct_series
from tests.gateway.dimse.test_retrieve import movescu
from tests.peers.orthanc import DCMTK_ENV, dcmtk_binary
from tests.peers.ports import free_port
from tests.peers.process import stop_group

GET = StudyRootQueryRetrieveInformationModelGet
MOVE = StudyRootQueryRetrieveInformationModelMove
DESTINATIONS = {"IMPLICIT": ("+xi",), "DEFAULT": (), "BIGENDIAN": ("+xb",)}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory):
    from tests.gateway_process import GatewayProcess

    tmp = tmp_path_factory.mktemp("retrieve-syntaxes")
    ports = {name: free_port() for name in (*DESTINATIONS, "ABORTS")}
    gateway = GatewayProcess(tmp / "gw", {})
    gateway.env.update(
        {
            "PACSGW_DICOM_QUERY_AETS": "MOVESCU,PYSCU",
            "PACSGW_DICOM_MOVE_DESTINATIONS": ",".join(f"{name}=127.0.0.1:{port}" for name, port in ports.items()),
        }
    )
    gateway.start()
    study = four_syntaxes()
    store_as_encoded(gateway.dicom_port, study)
    gateway.wait_idle()
    expected = {ds.SOPInstanceUID: ds.pixel_array for ds in study}
    yield gateway, study, expected, ports
    gateway.kill()


@contextmanager
def storescp(port: int, aet: str, options: tuple[str, ...], folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [dcmtk_binary("storescp"), *options, "-aet", aet, "-od", str(folder), str(port)],
        env={**os.environ, **DCMTK_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:  # listening once a connection is taken
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield
    finally:
        stop_group(proc)


def _received(folder: Path) -> dict[str, Dataset]:
    return {ds.SOPInstanceUID: ds for ds in (dcmread(p) for p in folder.iterdir())}


@pytest.mark.parametrize("destination", list(DESTINATIONS))
def test_move_to_storescp_decodes_to_the_same_pixels(archive, destination: str, tmp_path: Path) -> None:
    gateway, study, expected, ports = archive
    with storescp(ports[destination], destination, DESTINATIONS[destination], tmp_path):
        result = movescu(gateway.dicom_port, destination, study[0].StudyInstanceUID, "-v")
    assert result.returncode == 0, result.stderr
    assert "Received Final Move Response (Success)" in result.stderr, result.stderr
    got = _received(tmp_path)
    assert set(got) == set(expected)
    for uid, ds in got.items():
        if destination == "IMPLICIT":
            assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        assert np.array_equal(ds.pixel_array, expected[uid]), uid


def test_get_to_an_implicit_only_requester(archive) -> None:
    gateway, study, expected, _ = archive
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(GET)
    ae.add_requested_context(CTImageStorage, [ImplicitVRLittleEndian])
    received: list[Dataset] = []

    def on_store(event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0x0000

    assoc = ae.associate(
        "127.0.0.1", gateway.dicom_port, ae_title="PACSGW",
        ext_neg=[build_role(CTImageStorage, scp_role=True)], evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )  # fmt: skip
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study[0].StudyInstanceUID
    responses = [status for status, _ in assoc.send_c_get(identifier, GET)]
    assoc.release()
    assert responses[-1].Status == 0x0000 and responses[-1].NumberOfCompletedSuboperations == 4
    assert {ds.SOPInstanceUID for ds in received} == set(expected)
    for ds in received:
        assert np.array_equal(ds.pixel_array, expected[ds.SOPInstanceUID])


def _move_with_pynetdicom(port: int, study_uid: str, destination: str) -> list[Dataset]:
    """Every response (status and identifier merged) to a C-MOVE of a study."""
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(MOVE)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSGW")
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    responses = []
    for status, answer in assoc.send_c_move(identifier, destination, MOVE):
        if answer is not None:
            status.update(answer)
        responses.append(status)
    assoc.release()
    return responses


def _failed_uids(final: Dataset) -> set[str]:
    value = final.get("FailedSOPInstanceUIDList", [])
    return {value} if isinstance(value, str) else set(value)


def test_objects_gone_or_corrupt_in_the_store_fail_their_sub_operations_only(archive, tmp_path: Path) -> None:
    gateway, _, _, ports = archive
    study = four_syntaxes()[:3]
    store_as_encoded(gateway.dicom_port, study)
    gateway.wait_idle()
    index, store = gateway.open_index(), gateway.open_store()
    try:
        keys = {row["sop_instance_uid"]: row["object_key"] for row in index.instance_documents(study[0].StudyInstanceUID, with_metadata=False)}
        store.delete(keys[study[1].SOPInstanceUID])  # lost from the object store
        store.put(keys[study[2].SOPInstanceUID], b"not DICOM at all " * 64)  # overwritten with something else
        store.flush()
    finally:
        index.close()
    with storescp(ports["IMPLICIT"], "IMPLICIT", DESTINATIONS["IMPLICIT"], tmp_path):
        responses = _move_with_pynetdicom(gateway.dicom_port, study[0].StudyInstanceUID, "IMPLICIT")
    final = responses[-1]
    assert final.Status == 0xB000, final
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (1, 2)
    assert _failed_uids(final) == {study[1].SOPInstanceUID, study[2].SOPInstanceUID}
    assert set(_received(tmp_path)) == {study[0].SOPInstanceUID}


def test_a_destination_that_aborts_midway_gets_the_rest_counted_failed(archive) -> None:
    gateway, study, _, ports = archive
    scp = AE(ae_title="ABORTS")
    scp.add_supported_context(CTImageStorage, [ImplicitVRLittleEndian])
    received: list[str] = []

    def on_store(event) -> int:
        if received:
            event.assoc.abort()  # the second instance: the link drops before any answer
            return 0xC000
        received.append(event.dataset.SOPInstanceUID)
        return 0x0000

    server = scp.start_server(("127.0.0.1", ports["ABORTS"]), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        responses = _move_with_pynetdicom(gateway.dicom_port, study[0].StudyInstanceUID, "ABORTS")
    finally:
        server.shutdown()
    final = responses[-1]
    # One pending response, after the instance that went: once the destination is gone, nothing more is
    # fetched or reported pending; the rest are counted failed at once.
    assert [r.Status for r in responses[:-1]] == [0xFF00], responses
    assert final.Status == 0xB000, final
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (1, 3)
    assert _failed_uids(final) == {ds.SOPInstanceUID for ds in study} - set(received)


def test_big_endian_sources_arrive_with_their_words_swapped(archive, tmp_path: Path) -> None:
    """Explicit VR Big Endian (retired, still sent by old modalities): re-encoded little endian, same pixels."""
    gateway, _, _, ports = archive
    [ds] = ct_series(1, size=32)
    expected = ds.pixel_array.copy()
    ds.PixelData = expected.astype(">u2").tobytes()  # what a big endian sender puts on the wire
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    store_as_encoded(gateway.dicom_port, [ds])
    gateway.wait_idle()
    with storescp(ports["IMPLICIT"], "IMPLICIT", DESTINATIONS["IMPLICIT"], tmp_path):
        responses = _move_with_pynetdicom(gateway.dicom_port, ds.StudyInstanceUID, "IMPLICIT")
    assert responses[-1].Status == 0x0000
    [got] = _received(tmp_path).values()
    assert np.array_equal(got.pixel_array, expected)
