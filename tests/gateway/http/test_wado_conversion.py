"""WADO-RS, rendered and WADO-URI when an instance cannot be decoded; metadata and rendered content negotiation.

Never a 200 with nothing (or something broken) in it: one instance that cannot
be converted answers 406 saying why and that ``transfer-syntax=*`` gives it as
stored; in a study or series it is left out and named in a ``Warning`` header.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, JPEGExtended12Bit, generate_uid

from tests.compressed import compressed, store_as_encoded, undecodable
from tests.factory import ct_series

NS = {"d": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory):
    """A series of three (plain, JPEG 2000, undecodable), a series of one undecodable, one of two undecodable."""
    from tests.gateway_process import GatewayProcess

    gateway = GatewayProcess(tmp_path_factory.mktemp("wado-conversion") / "gw", {})
    gateway.start()
    plain, other = ct_series(2, size=64)
    mixed = [plain, compressed(other, JPEG2000Lossless), undecodable(plain)]
    alone = undecodable(plain)
    alone.SeriesInstanceUID = generate_uid()
    broken = [undecodable(plain), undecodable(plain)]
    for ds in broken:
        ds.SeriesInstanceUID = broken[0].SeriesInstanceUID if ds is not broken[0] else generate_uid()
    store_as_encoded(gateway.dicom_port, [*mixed, alone, *broken])
    gateway.wait_idle()
    yield gateway, mixed, alone, broken
    gateway.kill()


def _get(gateway, path: str, accept: str | None = None, params: dict | None = None) -> requests.Response:
    headers = {**gateway.auth_headers, **({"Accept": accept} if accept else {})}
    return requests.get(f"{gateway.base_url}/dicom-web{path}", headers=headers, params=params, timeout=30)


def _parts(response: requests.Response) -> list[bytes]:
    boundary = re.search(r"boundary=\"?([^\";]+)", response.headers["Content-Type"]).group(1)  # type: ignore[union-attr]
    chunks = response.content.split(b"--" + boundary.encode())[1:-1]
    return [chunk.split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")] for chunk in chunks]


def _series(ds: Dataset) -> str:
    return f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"


def _instance(ds: Dataset) -> str:
    return f"{_series(ds)}/instances/{ds.SOPInstanceUID}"


def test_one_instance_that_cannot_be_decoded_is_406_and_comes_as_stored_with_star(archive) -> None:
    gateway, _, alone, _ = archive
    response = _get(gateway, _instance(alone))
    assert response.status_code == 406
    assert "transfer-syntax=*" in response.json()["error"] and "cannot be decoded" in response.json()["error"]
    client = DICOMwebClient(url=f"{gateway.base_url}/dicom-web", headers=gateway.auth_headers)
    as_stored = client.retrieve_instance(
        alone.StudyInstanceUID, alone.SeriesInstanceUID, alone.SOPInstanceUID, media_types=(("application/dicom", "*"),)
    )
    assert as_stored.file_meta.TransferSyntaxUID == JPEGExtended12Bit and as_stored.PixelData == alone.PixelData


def test_a_series_leaves_out_what_cannot_be_decoded_and_warns(archive) -> None:
    gateway, mixed, _, broken = archive
    response = _get(gateway, _series(mixed[0]))
    assert response.status_code == 200
    assert re.fullmatch(r'299 \S+ "1 of 3 instances left out: .*transfer-syntax=\*.*"', response.headers["Warning"])
    client = DICOMwebClient(url=f"{gateway.base_url}/dicom-web", headers=gateway.auth_headers)
    got = client.retrieve_series(mixed[0].StudyInstanceUID, mixed[0].SeriesInstanceUID)
    assert sorted(ds.SOPInstanceUID for ds in got) == sorted(ds.SOPInstanceUID for ds in mixed[:2])
    for ds in got:
        source = next(m for m in mixed if m.SOPInstanceUID == ds.SOPInstanceUID)
        assert np.array_equal(ds.pixel_array, source.pixel_array)
    assert "Warning" not in _get(gateway, _series(mixed[0]), 'multipart/related; type="application/dicom"; transfer-syntax=*').headers
    nothing = _get(gateway, _series(broken[0]))
    assert nothing.status_code == 406 and "none of the 2 instances" in nothing.json()["error"]


def test_frames_bulkdata_rendered_and_wado_uri_answer_406_not_a_broken_200(archive) -> None:
    gateway, _, alone, _ = archive
    for path in ("/frames/1", "/bulkdata/7FE00010", "/rendered"):
        response = _get(gateway, _instance(alone) + path)
        assert response.status_code == 406, (path, response.status_code)
        assert "cannot be" in response.json()["error"]
    params = {"requestType": "WADO", "studyUID": alone.StudyInstanceUID, "seriesUID": alone.SeriesInstanceUID,
              "objectUID": alone.SOPInstanceUID}  # fmt: skip
    for content_type in ("application/dicom", "image/jpeg"):
        response = requests.get(f"{gateway.base_url}/wado", params={**params, "contentType": content_type}, headers=gateway.auth_headers, timeout=30)
        assert response.status_code == 406, (content_type, response.status_code)


def test_metadata_as_native_dicom_model_xml_or_406(archive) -> None:
    gateway, mixed, _, _ = archive
    response = _get(gateway, f"{_series(mixed[0])}/metadata", 'multipart/related; type="application/dicom+xml"')
    assert response.status_code == 200 and 'type="application/dicom+xml"' in response.headers["Content-Type"]
    documents = [ET.fromstring(part) for part in _parts(response)]
    assert len(documents) == 3
    uids = {d.find("d:DicomAttribute[@tag='00080018']/d:Value", NS).text for d in documents}  # type: ignore[union-attr]
    assert uids == {ds.SOPInstanceUID for ds in mixed}
    name = documents[0].find("d:DicomAttribute[@keyword='PatientName']/d:PersonName/d:Alphabetic", NS)
    assert name is not None and [c.text for c in name] == ["Nguyễn", "Văn An"]
    pixels = documents[0].find("d:DicomAttribute[@tag='7FE00010']/d:BulkData", NS)
    assert pixels is not None and pixels.get("uri", "").endswith("/bulkdata/7FE00010")
    for accept in ("application/dicom+json", "application/json", "*/*", "application/dicom+xml;q=0.5, application/dicom+json"):
        assert _get(gateway, f"{_series(mixed[0])}/metadata", accept).headers["Content-Type"].startswith("application/dicom+json")
    for accept in ("application/pdf", "image/jpeg", "application/dicom+json;q=0, text/html"):
        response = _get(gateway, f"{_series(mixed[0])}/metadata", accept)
        assert response.status_code == 406 and "application/dicom+xml" in response.json()["error"], accept


def test_series_and_study_rendered_with_dicomweb_client(archive) -> None:
    gateway, mixed, _, _ = archive
    client = DICOMwebClient(url=f"{gateway.base_url}/dicom-web", headers=gateway.auth_headers)
    body = client.retrieve_series_rendered(mixed[0].StudyInstanceUID, mixed[0].SeriesInstanceUID)
    assert body.count(b"\xff\xd8\xff") == 2  # the two images that render; the undecodable one is left out
    response = _get(gateway, f"/studies/{mixed[0].StudyInstanceUID}/rendered", 'multipart/related; type="image/png"')
    assert response.status_code == 200 and response.headers["Warning"].startswith("299 ")
    images = [Image.open(io.BytesIO(part)) for part in _parts(response)]
    assert len(images) >= 2 and all(image.format == "PNG" and image.size == (64, 64) for image in images)
    assert _get(gateway, f"{_series(mixed[0])}/rendered", "application/dicom").status_code == 406
