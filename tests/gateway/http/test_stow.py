"""STOW-RS through dicomweb-client: the same ingest path as C-STORE, PS3.18 response semantics."""

from __future__ import annotations

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import JPEG2000Lossless

from tests.factory import ct_series, to_bytes, truncated


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    from tests.gateway_process import GatewayProcess

    gw = GatewayProcess(tmp_path_factory.mktemp("stow") / "gw", {})
    gw.start()
    yield gw
    gw.kill()


def _post(gateway, parts: list[bytes], path: str = "/dicom-web/studies") -> requests.Response:
    boundary = "PACSGWTEST"
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n" for p in parts)
    body += f"--{boundary}--\r\n".encode()
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
        **gateway.auth_headers,
    }
    return requests.post(gateway.base_url + path, data=body, headers=headers, timeout=30)


def test_stored_then_found_and_retrieved(gateway) -> None:
    client = DICOMwebClient(url=f"{gateway.base_url}/dicom-web", headers=gateway.auth_headers)
    series = ct_series(3, size=32)
    series[2].compress(JPEG2000Lossless, generate_instance_uid=False)  # meta kept: the part says it is JPEG 2000
    response = client.store_instances(series)
    assert [item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence] == [ds.SOPInstanceUID for ds in series]
    gateway.wait_idle()
    assert len(client.search_for_instances(study_instance_uid=series[0].StudyInstanceUID)) == 3
    assert client.retrieve_instance(series[0].StudyInstanceUID, series[0].SeriesInstanceUID, series[0].SOPInstanceUID).PixelData == series[0].PixelData
    stored = client.retrieve_instance(series[2].StudyInstanceUID, series[2].SeriesInstanceUID, series[2].SOPInstanceUID, media_types=(("application/dicom", "*"),))
    assert stored.file_meta.TransferSyntaxUID == JPEG2000Lossless
    status, metrics = gateway.get("/metrics")
    assert 'pacsgw_instances_received_total{source="stow"} 3.0' in metrics


def test_partial_and_total_failure(gateway) -> None:
    good, bad = ct_series(2, size=32)
    response = _post(gateway, [to_bytes(good), truncated(bad)])
    assert response.status_code == 202
    body = response.json()
    assert len(body["00081199"]["Value"]) == 1
    assert body["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    assert _post(gateway, [b"not dicom"]).status_code == 409
    other_study = ct_series(1, size=32)[0]
    response = _post(gateway, [to_bytes(other_study)], path=f"/dicom-web/studies/{good.StudyInstanceUID}")
    assert response.status_code == 409 and response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]


def test_bad_requests(gateway) -> None:
    assert requests.post(gateway.base_url + "/dicom-web/studies", data=b"x", headers={"Content-Type": "application/json", **gateway.auth_headers}, timeout=10).status_code == 415
    assert requests.post(gateway.base_url + "/dicom-web/studies/1.2.03", data=b"x", headers={"Content-Type": "multipart/related; boundary=x", **gateway.auth_headers}, timeout=10).status_code == 400
