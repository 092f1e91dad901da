"""Rendered images, thumbnails and WADO-URI: decoded on the server, windowed, scaled, as JPEG or PNG."""

from __future__ import annotations

import io
import json
import re
import urllib.request

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.uid import JPEG2000Lossless

from tests.conftest import storescu
from tests.factory import ct_series, write_files


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory):
    from tests.gateway_process import GatewayProcess

    tmp = tmp_path_factory.mktemp("rendered")
    gateway = GatewayProcess(tmp / "gw", {"PACSGW_HTTP_MAX_RENDERED_INSTANCES": "4"})
    gateway.start()
    series = ct_series(2, size=64)
    ramp = np.tile(np.arange(64, dtype=np.uint16) * 64, (64, 1))  # stored 0..4032 across the columns
    for ds in series:
        ds.PixelData = ramp.tobytes()
        ds.WindowCenter, ds.WindowWidth = 40, 400
    series[1].compress(JPEG2000Lossless, generate_instance_uid=False)
    files = write_files(series, tmp / "files")
    assert storescu(gateway.dicom_port, files[:1]).returncode == 0
    assert storescu(gateway.dicom_port, files[1:], options=("-xv",)).returncode == 0
    damaged = ct_series(3, size=16, study_uid=series[0].StudyInstanceUID)  # the study: 5 instances, over the cap of 4
    for ds in damaged:
        ds.SeriesNumber = 2  # after the first series, whose middle image is the study's thumbnail
    assert storescu(gateway.dicom_port, write_files(damaged, tmp / "damaged")).returncode == 0
    gateway.wait_idle()
    index, store = gateway.open_index(), gateway.open_store()
    [row] = index.instance_documents(damaged[1].StudyInstanceUID, damaged[1].SeriesInstanceUID, damaged[1].SOPInstanceUID)
    stored = store.get(row["object_key"])
    store.put(row["object_key"], stored[:128] + b"DXCM" + stored[132:])  # damaged in the store after ingest: unreadable
    store.flush()
    index.close()
    yield gateway, series, ramp, damaged
    gateway.kill()


def _fetch(gateway, path: str, accept: str = "image/png") -> tuple[int, bytes, str]:
    request = urllib.request.Request(gateway.base_url + path, headers={"Accept": accept, **gateway.auth_headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), ""


def _instance(ds) -> str:
    return f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def _expected(ramp: np.ndarray, center: float, width: float) -> np.ndarray:
    hu = ramp.astype(np.float32) - 1024  # Rescale Intercept -1024
    return (np.clip((hu - (center - width / 2)) / width, 0, 1) * 255).astype(np.uint8)


def test_rendered_png_applies_rescale_and_window(archive) -> None:
    gateway, series, ramp, _ = archive
    for ds in series:  # the JPEG 2000 one is decoded on the server
        status, body, ctype = _fetch(gateway, _instance(ds) + "/rendered?window=-200,1000")
        assert status == 200 and ctype == "image/png"
        image = np.asarray(Image.open(io.BytesIO(body)))
        assert np.abs(image.astype(int) - _expected(ramp, -200, 1000)).max() <= 1
    status, body, _ = _fetch(gateway, _instance(series[0]) + "/rendered")  # the instance's own window
    assert np.abs(np.asarray(Image.open(io.BytesIO(body))).astype(int) - _expected(ramp, 40, 400)).max() <= 1


def test_jpeg_viewport_thumbnail_and_frames(archive) -> None:
    gateway, series, _, _ = archive
    status, body, ctype = _fetch(gateway, _instance(series[0]) + "/rendered?viewport=32,32&quality=70", "image/jpeg")
    assert status == 200 and ctype == "image/jpeg" and Image.open(io.BytesIO(body)).size == (32, 32)
    status, body, _ = _fetch(gateway, _instance(series[0]) + "/frames/1/rendered", "image/jpeg")
    assert status == 200 and Image.open(io.BytesIO(body)).size == (64, 64)
    study = f"/dicom-web/studies/{series[0].StudyInstanceUID}"
    for path in (f"{study}/thumbnail", f"{study}/series/{series[0].SeriesInstanceUID}/thumbnail"):
        status, body, ctype = _fetch(gateway, path, "image/jpeg")
        assert status == 200 and ctype == "image/jpeg" and max(Image.open(io.BytesIO(body)).size) <= 128


def test_rendering_errors(archive) -> None:
    gateway, series, _, _ = archive
    path = _instance(series[0])
    assert _fetch(gateway, path + "/frames/2/rendered")[0] == 404
    assert _fetch(gateway, path + "/rendered?window=abc")[0] == 400
    assert _fetch(gateway, path + "/rendered?window=40,-1")[0] == 400
    assert _fetch(gateway, path + "/rendered?viewport=0,10")[0] == 400
    assert _fetch(gateway, path + "/rendered", "image/gif")[0] == 406


def test_wado_uri(archive) -> None:
    gateway, series, ramp, _ = archive
    ds = series[1]
    uids = f"studyUID={ds.StudyInstanceUID}&seriesUID={ds.SeriesInstanceUID}&objectUID={ds.SOPInstanceUID}"
    status, body, ctype = _fetch(gateway, f"/wado?requestType=WADO&{uids}&contentType=application/dicom", "*/*")
    assert status == 200 and ctype == "application/dicom"
    decoded = dcmread(io.BytesIO(body))
    assert decoded.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1" and np.array_equal(decoded.pixel_array, ramp)
    status, body, _ = _fetch(gateway, f"/wado?requestType=WADO&{uids}&contentType=image/png&windowCenter=-200&windowWidth=1000&rows=32", "*/*")
    assert status == 200 and Image.open(io.BytesIO(body)).size == (32, 32)
    assert _fetch(gateway, f"/wado?requestType=WADO&{uids}&contentType=text/html")[0] == 406
    assert _fetch(gateway, "/wado?requestType=WADO&studyUID=1.2.03&seriesUID=1.2&objectUID=1.2")[0] == 400


def _parts(body: bytes, content_type: str) -> list[bytes]:
    boundary = re.search(r"boundary=([^;]+)", content_type).group(1)  # type: ignore[union-attr]
    return [chunk.split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")] for chunk in body.split(b"--" + boundary.encode())[1:-1]]


def _fetch_many(gateway, path: str) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(gateway.base_url + path, headers={"Accept": "image/png", **gateway.auth_headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def test_a_damaged_object_in_a_series_is_left_out_with_a_warning(archive) -> None:
    gateway, _, _, damaged = archive
    series = f"/dicom-web/studies/{damaged[0].StudyInstanceUID}/series/{damaged[0].SeriesInstanceUID}"
    status, body, headers = _fetch_many(gateway, series + "/rendered")
    assert status == 200, body
    assert re.fullmatch(r'299 \S+ "1 of 3 instances cannot be rendered and are left out"', headers["Warning"])
    images = [Image.open(io.BytesIO(part)) for part in _parts(body, headers["Content-Type"])]
    assert [(image.format, image.size) for image in images] == [("PNG", (16, 16))] * 2
    status, body, _ = _fetch_many(gateway, f"{series}/instances/{damaged[1].SOPInstanceUID}/rendered")
    assert status == 406 and "cannot be read" in json.loads(body)["error"]
    assert _fetch_many(gateway, f"{series}/instances/{damaged[0].SOPInstanceUID}/rendered")[0] == 200


def test_a_study_of_more_instances_than_rendered_at_once_is_413(archive) -> None:
    gateway, series, _, damaged = archive
    status, body, _ = _fetch_many(gateway, f"/dicom-web/studies/{series[0].StudyInstanceUID}/rendered")
    assert status == 413
    assert json.loads(body)["error"].startswith("this study has 5 instances and at most 4 are rendered in one answer")
    assert _fetch_many(gateway, f"/dicom-web/studies/{series[0].StudyInstanceUID}/series/{series[0].SeriesInstanceUID}/rendered")[0] == 200
