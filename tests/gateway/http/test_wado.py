"""WADO-RS through dicomweb-client: instances, metadata from the index, frames, bulk data, negotiation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import JPEG2000Lossless

from tests.conftest import storescu
from tests.factory import ct_series, write_files


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory):
    from tests.gateway_process import GatewayProcess

    tmp = tmp_path_factory.mktemp("wado")
    gateway = GatewayProcess(tmp / "gw", {})
    gateway.start()
    series = ct_series(3, size=64)
    originals = [copy.deepcopy(ds) for ds in series]
    series[2].compress(JPEG2000Lossless, generate_instance_uid=False)
    files = write_files(series, tmp / "files")
    assert storescu(gateway.dicom_port, files[:2]).returncode == 0
    assert storescu(gateway.dicom_port, files[2:], options=("-xv",)).returncode == 0
    gateway.wait_idle()
    yield gateway, originals
    gateway.kill()


def _client(gateway) -> DICOMwebClient:
    return DICOMwebClient(url=f"{gateway.base_url}/dicom-web", headers=gateway.auth_headers)


def test_study_metadata_comes_from_the_index_with_bulk_data_links(archive) -> None:
    gateway, series = archive
    client = _client(gateway)
    metadata = client.retrieve_study_metadata(series[0].StudyInstanceUID)
    assert sorted(m["00080018"]["Value"][0] for m in metadata) == sorted(ds.SOPInstanceUID for ds in series)
    first = next(m for m in metadata if m["00080018"]["Value"][0] == series[0].SOPInstanceUID)
    assert first["00100010"]["Value"][0]["Alphabetic"] == "Nguyễn^Văn An"
    assert first["00280010"]["Value"] == [64]
    pixel_uri = first["7FE00010"]["BulkDataURI"]
    assert pixel_uri.endswith(f"/instances/{series[0].SOPInstanceUID}/bulkdata/7FE00010")
    series_metadata = client.retrieve_series_metadata(series[0].StudyInstanceUID, series[0].SeriesInstanceUID)
    assert len(series_metadata) == 3
    assert client.retrieve_bulkdata(pixel_uri)[0] == series[0].PixelData


def test_metadata_is_gzipped_for_clients_that_accept_it(archive) -> None:
    import gzip
    import json
    import urllib.request

    gateway, series = archive
    url = f"{gateway.base_url}/dicom-web/studies/{series[0].StudyInstanceUID}/metadata"
    plain = urllib.request.urlopen(urllib.request.Request(url, headers=gateway.auth_headers), timeout=10)
    assert plain.headers.get("Content-Encoding") is None
    expected = json.loads(plain.read())
    request = urllib.request.Request(url, headers={**gateway.auth_headers, "Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.headers["Content-Encoding"] == "gzip"
        body = answer.read()
    assert json.loads(gzip.decompress(body)) == expected and len(body) < len(json.dumps(expected)) / 3


def test_instances_default_to_explicit_little_endian_or_as_stored(archive) -> None:
    gateway, series = archive
    client = _client(gateway)
    study = client.retrieve_study(series[0].StudyInstanceUID)
    assert sorted(ds.SOPInstanceUID for ds in study) == sorted(ds.SOPInstanceUID for ds in series)
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in study} == {"1.2.840.10008.1.2.1"}
    decoded = next(ds for ds in study if ds.SOPInstanceUID == series[2].SOPInstanceUID)
    assert np.array_equal(decoded.pixel_array, series[2].pixel_array)
    as_stored = client.retrieve_instance(
        series[2].StudyInstanceUID, series[2].SeriesInstanceUID, series[2].SOPInstanceUID,
        media_types=(("application/dicom", "*"),),
    )  # fmt: skip
    assert as_stored.file_meta.TransferSyntaxUID == JPEG2000Lossless


def test_frames_raw_even_when_stored_compressed(archive) -> None:
    gateway, series = archive
    client = _client(gateway)
    for ds in (series[0], series[2]):
        [frame] = client.retrieve_instance_frames(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, frame_numbers=[1])
        assert frame == ds.PixelData


def test_errors(archive) -> None:
    gateway, series = archive
    study = series[0].StudyInstanceUID
    assert gateway.get("/dicom-web/studies/1.2.03/metadata")[0] == 400
    assert gateway.get("/dicom-web/studies/1.2.3.4/metadata")[0] == 404
    status, body = gateway.get(f"/dicom-web/studies/{study}", {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'})
    assert status == 406 and "transfer-syntax" in body["error"]
    instance = f"/dicom-web/studies/{study}/series/{series[0].SeriesInstanceUID}/instances/{series[0].SOPInstanceUID}"
    assert gateway.get(f"{instance}/frames/2")[0] == 404
    assert gateway.get(f"{instance}/frames/0")[0] == 400
    assert gateway.get(f"{instance}/frames/a")[0] == 400


def test_multiframe_frames_are_read_by_range(archive, tmp_path) -> None:
    """A cine of many frames: each frame is read from its place in the object, and is the right one."""
    from pydicom.uid import generate_uid

    from tests.conftest import storescu
    from tests.factory import write_files

    gateway, _ = archive
    cine = ct_series(1, size=256)[0]  # 128 KiB a frame: over the size under which objects are read whole
    frames = [np.full((256, 256), 100 * (i + 1), dtype=np.uint16) for i in range(8)]
    cine.NumberOfFrames, cine.PixelData = 8, b"".join(f.tobytes() for f in frames)
    cine.SOPInstanceUID = cine.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    assert storescu(gateway.dicom_port, write_files([cine], tmp_path / "cine")).returncode == 0
    gateway.wait_idle()
    index = gateway.open_index()
    [row] = index.instance_documents(cine.StudyInstanceUID, with_metadata=False)
    index.close()
    assert row["data_offset"] is not None and row["frame_length"] == 256 * 256 * 2
    got = _client(gateway).retrieve_instance_frames(cine.StudyInstanceUID, cine.SeriesInstanceUID, cine.SOPInstanceUID, frame_numbers=[3, 8])
    assert [np.frombuffer(f, dtype=np.uint16)[0] for f in got] == [300, 800]
    path = f"/dicom-web/studies/{cine.StudyInstanceUID}/series/{cine.SeriesInstanceUID}/instances/{cine.SOPInstanceUID}/frames/9"
    assert gateway.get(path)[0] == 404


def test_a_frame_read_that_blocks_on_the_file_system_never_stalls_other_requests(archive, tmp_path) -> None:
    """Opening a file can block (NFS, a hung mount): the local store is read in a thread, never on the event loop.
    Here the object's path is a FIFO, whose open blocks until a writer comes."""
    import os
    import threading
    import time

    from pydicom.uid import generate_uid

    from tests.factory import write_files

    gateway, _ = archive
    cine = ct_series(1, size=256)[0]
    cine.NumberOfFrames, cine.PixelData = 2, bytes(256 * 256 * 2 * 2)
    cine.SOPInstanceUID = cine.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    assert storescu(gateway.dicom_port, write_files([cine], tmp_path / "cine")).returncode == 0
    gateway.wait_idle()
    index = gateway.open_index()
    [row] = index.instance_documents(cine.StudyInstanceUID, with_metadata=False)
    index.close()
    path = gateway.settings().local_objects_path / row["object_key"]
    kept = tmp_path / "kept.dcm"
    os.replace(path, kept)
    os.mkfifo(path)
    answers: list[int] = []
    url = f"/dicom-web/studies/{cine.StudyInstanceUID}/series/{cine.SeriesInstanceUID}/instances/{cine.SOPInstanceUID}/frames/1"
    reading = threading.Thread(target=lambda: answers.append(gateway.get(url, {"Accept": "multipart/related; type=application/octet-stream"})[0]))
    reading.start()
    try:
        deadline = time.monotonic() + 20
        while not _waiting_on_a_fifo(gateway.proc.pid):  # the frame request is in, its open blocked
            assert time.monotonic() < deadline, "the frame read never reached the file"
            time.sleep(0.02)
        status, _ = gateway.get("/health")  # answered while the frame read waits on the file system
        assert status == 200
    finally:
        writer = os.open(path, os.O_WRONLY)  # lets the blocked open return
        os.close(writer)
        reading.join(20)
        os.replace(kept, path)
    assert answers and answers[0] in (200, 503)


def _waiting_on_a_fifo(group: int) -> bool:
    """Whether a thread of the process group is blocked opening a FIFO (its kernel wait channel)."""
    from pathlib import Path

    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != group:
                continue
            if any((task / "wchan").read_text() == "wait_for_partner" for task in (proc / "task").iterdir()):
                return True
        except (OSError, ValueError, IndexError):
            continue
    return False


def test_many_frames_are_sent_without_holding_them_twice(archive, tmp_path) -> None:
    """Above 8 MiB the frames are written part by part: the process's peak memory grows by about the frames read,
    not twice that (a joined body). Peak resident memory is reset before the request (/proc/<pid>/clear_refs)."""
    import urllib.request

    from pydicom.uid import generate_uid

    from tests.factory import write_files

    gateway, _ = archive
    count, frame = 24, 512 * 512 * 2
    cine = ct_series(1, size=512)[0]
    cine.NumberOfFrames = count
    cine.PixelData = b"".join(bytes([n]) * frame for n in range(count))
    cine.SOPInstanceUID = cine.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    assert storescu(gateway.dicom_port, write_files([cine], tmp_path / "cine")).returncode == 0
    gateway.wait_idle()
    url = (
        f"{gateway.base_url}/dicom-web/studies/{cine.StudyInstanceUID}/series/{cine.SeriesInstanceUID}"
        f"/instances/{cine.SOPInstanceUID}/frames/{','.join(str(n) for n in range(1, count + 1))}"
    )
    status = f"/proc/{gateway.proc.pid}/status"

    def kib(field: str) -> int:
        line = next(line for line in open(status) if line.startswith(field))
        return int(line.split()[1])

    with open(f"/proc/{gateway.proc.pid}/clear_refs", "w") as fh:
        fh.write("5")  # the peak (VmHWM) restarts from the resident size now
    before = kib("VmRSS:")
    headers = {**gateway.auth_headers, "Accept": "multipart/related; type=application/octet-stream"}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
        body = response.read()
        assert int(response.headers["Content-Length"]) == len(body)
    growth = (kib("VmHWM:") - before) * 1024
    for n in range(count):
        assert bytes([n]) * frame in body
    assert growth < 1.5 * count * frame, f"peak grew by {growth} bytes for {count * frame} bytes of frames"
