"""C-MOVE and C-GET SCP against DCMTK movescu/getscu, pynetdicom and Orthanc as the move destination."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from tests.conftest import storescu
from tests.factory import ct_series, write_files
from tests.peers.orthanc import DCMTK_ENV, dcmtk_binary, run_orthanc
from tests.peers.ports import free_port

MOVE = StudyRootQueryRetrieveInformationModelMove
GET = StudyRootQueryRetrieveInformationModelGet


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory):
    """A gateway with one CT study (4 instances, one stored as JPEG 2000) and a running Orthanc as destination."""
    from tests.gateway_process import GatewayProcess

    tmp = tmp_path_factory.mktemp("retrieve")
    gateway = GatewayProcess(tmp / "gw", {})  # its ports are chosen now, for Orthanc's modality list
    modalities = {"DicomModalities": {"PACSGW": ["PACSGW", "127.0.0.1", gateway.dicom_port]}}
    with run_orthanc(tmp / "orthanc", aet="ORTHANC", config=modalities) as orthanc:
        pynetdicom_port, dead_port = free_port(), free_port()
        gateway.env.update(
            {
                "PACSGW_DICOM_QUERY_AETS": "MOVESCU,GETSCU,PYSCU,ORTHANC",
                "PACSGW_DICOM_MOVE_DESTINATIONS": f"ORTHANC=127.0.0.1:{orthanc.dicom_port},"
                f"PYSTORE=127.0.0.1:{pynetdicom_port},DEAD=127.0.0.1:{dead_port}",
            }
        )
        gateway.start()
        series = ct_series(4, size=64)
        series[3].compress(JPEG2000Lossless)
        files = write_files(series, tmp / "files")
        assert storescu(gateway.dicom_port, files[:3]).returncode == 0
        assert storescu(gateway.dicom_port, files[3:], options=("-xv",)).returncode == 0
        gateway.wait_idle()
        yield gateway, orthanc, series, pynetdicom_port
        gateway.kill()


def _study(series: list[Dataset]) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = series[0].StudyInstanceUID
    return identifier


def _associate(port: int, context: str, calling: str = "PYSCU", get: bool = False):
    ae = AE(ae_title=calling)
    ae.add_requested_context(context)
    roles = []
    if get:
        for cx in StoragePresentationContexts[:120]:
            ae.add_requested_context(cx.abstract_syntax)
        roles = [build_role(CTImageStorage, scp_role=True)]
    received: list[Dataset] = []

    def on_store(event):
        received.append(event.dataset)
        return 0x0000

    assoc = ae.associate("127.0.0.1", port, ae_title="PACSGW", ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    return assoc, received


def movescu(port: int, destination: str, study_uid: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk_binary("movescu"), *options, "-S", "-aet", "MOVESCU", "-aec", "PACSGW", "-aem", destination,
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", "127.0.0.1", str(port)],
        env={**os.environ, **DCMTK_ENV}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_move_to_orthanc_with_dcmtk(archive, tmp_path: Path) -> None:
    gateway, orthanc, series, _ = archive
    result = movescu(gateway.dicom_port, "ORTHANC", series[0].StudyInstanceUID)
    assert result.returncode == 0, result.stderr
    assert orthanc.get_json("/statistics")["CountInstances"] == 4
    stored = {orthanc.get_json(f"/instances/{i}/simplified-tags")["SOPInstanceUID"] for i in orthanc.get_json("/instances")}
    assert stored == {ds.SOPInstanceUID for ds in series}


def test_move_counts_and_statuses_with_pynetdicom(archive) -> None:
    gateway, _, series, store_port = archive
    scp = AE(ae_title="PYSTORE")
    scp.add_supported_context(CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", JPEG2000Lossless])
    received: list[str] = []

    def on_store(event):
        received.append(event.dataset.SOPInstanceUID)
        return 0x0000

    server = scp.start_server(("127.0.0.1", store_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        assoc, _ = _associate(gateway.dicom_port, MOVE)
        responses = [(s.Status, s) for s, _ in assoc.send_c_move(_study(series), "PYSTORE", MOVE)]
        unknown = [s.Status for s, _ in assoc.send_c_move(_study(series), "NOWHERE", MOVE)]
        dead = [s.Status for s, _ in assoc.send_c_move(_study(series), "DEAD", MOVE)]
        assoc.release()
    finally:
        server.shutdown()
    statuses = [status for status, _ in responses]
    assert statuses == [0xFF00] * 3 + [0x0000]
    assert [s.NumberOfRemainingSuboperations for _, s in responses[:3]] == [3, 2, 1]
    final = responses[-1][1]
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (4, 0)
    assert sorted(received) == sorted(ds.SOPInstanceUID for ds in series)
    assert unknown == [0xA801]
    assert dead == [0xA702]


def test_get_with_dcmtk_sends_back_decompressing_what_the_peer_cannot_take(archive, tmp_path: Path) -> None:
    gateway, _, series, _ = archive
    result = subprocess.run(
        [dcmtk_binary("getscu"), "-S", "-aet", "GETSCU", "-aec", "PACSGW", "-od", str(tmp_path),
         "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={series[0].StudyInstanceUID}",
         "-k", f"SeriesInstanceUID={series[0].SeriesInstanceUID}", "127.0.0.1", str(gateway.dicom_port)],
        env={**os.environ, **DCMTK_ENV}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = {ds.SOPInstanceUID: ds for ds in (dcmread(p) for p in tmp_path.iterdir())}
    assert set(got) == {ds.SOPInstanceUID for ds in series}
    compressed = got[series[3].SOPInstanceUID]
    assert not compressed.file_meta.TransferSyntaxUID.is_compressed  # getscu proposes uncompressed syntaxes only
    assert np.array_equal(compressed.pixel_array, series[3].pixel_array)


def test_get_counts_with_pynetdicom_and_refusals(archive) -> None:
    gateway, _, series, _ = archive
    assoc, received = _associate(gateway.dicom_port, GET, get=True)
    responses = [(s.Status, s) for s, _ in assoc.send_c_get(_study(series), GET)]
    assoc.release()
    assert responses[-1][0] == 0x0000 and responses[-1][1].NumberOfCompletedSuboperations == 4
    assert sorted(ds.SOPInstanceUID for ds in received) == sorted(ds.SOPInstanceUID for ds in series)

    stranger, _ = _associate(gateway.dicom_port, GET, calling="STRANGER", get=True)
    assert [s.Status for s, _ in stranger.send_c_get(_study(series), GET)] == [0x0124]
    nothing = Dataset()
    nothing.QueryRetrieveLevel = "STUDY"
    nothing.StudyInstanceUID = ""
    assert [s.Status for s, _ in stranger.send_c_get(nothing, GET)] == [0x0124]
    stranger.release()


def test_orthanc_queries_the_gateway_and_retrieves_from_it(archive) -> None:
    """Orthanc, as a PACS workstation would, finds the study by patient ID and pulls it with C-MOVE."""
    import json
    import urllib.request

    _, orthanc, series, _ = archive

    def post(path: str, body: object) -> object:
        request = urllib.request.Request(orthanc.base_url + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    query = post("/modalities/PACSGW/query", {"Level": "Study", "Query": {"PatientID": "MRN-0001", "StudyDate": ""}})
    answers = orthanc.get_json(f"/queries/{query['ID']}/answers?expand")
    assert len(answers) == 1
    assert answers[0]["0020,000d"]["Value"] == series[0].StudyInstanceUID
    post(f"/queries/{query['ID']}/retrieve", {"TargetAet": "ORTHANC", "Synchronous": True})
    assert orthanc.get_json("/statistics")["CountInstances"] == 4


def test_retrieves_are_in_the_audit_trail(archive, tmp_path: Path) -> None:
    import time

    gateway, _, series, _ = archive
    result = movescu(gateway.dicom_port, "NOWHERE", series[0].StudyInstanceUID)
    time.sleep(0.5)
    events = gateway.get("/audit?user=MOVESCU")[1]
    assert any(e["target"].startswith("C-MOVE to NOWHERE") and e["outcome"] == 0xA801 for e in events), (events, result.stderr)
