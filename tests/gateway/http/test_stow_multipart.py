"""STOW-RS request bodies as real clients send them, and the exact reason when one cannot be read."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import requests

from tests.factory import ct_series, to_bytes


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    from tests.gateway_process import GatewayProcess

    gw = GatewayProcess(tmp_path_factory.mktemp("stow-multipart") / "gw", {})
    gw.start()
    yield gw
    gw.kill()


def _body(boundary: str, parts: list[bytes], *, part_type: str = "application/dicom", preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    body = preamble + b"".join(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + p + b"\r\n" for p in parts)
    return body + f"--{boundary}--\r\n".encode() + epilogue


def _post(gateway, content_type: str | None, body: bytes, accept: str = "application/dicom+json") -> requests.Response:
    headers = {**gateway.auth_headers, "Accept": accept}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return requests.post(f"{gateway.base_url}/dicom-web/studies", data=body, headers=headers, timeout=30)


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/related; type="application/dicom"; boundary={b}',
        'multipart/related; boundary="{b}"; type=application/dicom',
        'Multipart/Related;type=application/dicom;boundary={b};transfer-syntax=1.2.840.10008.1.2.1',
        'multipart/related; type="application/dicom"; start="<root>"; boundary="{b}"',
        "multipart/related; boundary={b}",
    ],
)
@pytest.mark.parametrize("boundary", ["short", "x" * 70, "=_" + "3f" * 35 + "z", "a" * 200], ids=["5", "70", "73", "200"])
def test_boundaries_and_parameters_real_clients_send(gateway, content_type: str, boundary: str) -> None:
    [ds] = ct_series(1, size=16)
    body = _body(boundary, [to_bytes(ds)], part_type="application/dicom; transfer-syntax=1.2.840.10008.1.2.1",
                 preamble=b"\r\nThis is a preamble\r\n", epilogue=b"\r\nepilogue\r\n")  # fmt: skip
    response = _post(gateway, content_type.format(b=boundary), body)
    assert response.status_code == 200, response.text
    assert response.json()["00081199"]["Value"][0]["00081155"]["Value"] == [ds.SOPInstanceUID]


def test_each_bad_request_says_what_is_wrong(gateway) -> None:
    [ds] = ct_series(1, size=16)
    good = _body("B", [to_bytes(ds)])
    cases = [
        ("multipart/related; type=application/dicom", good, 400, "no boundary parameter"),
        ("application/dicom", to_bytes(ds), 415, "got application/dicom"),
        (None, good, 415, "got "),
        ('multipart/related; type="application/dicom+json"; boundary=B', good, 415, 'got type="application/dicom+json"'),
        ("multipart/related; type=application/dicom; boundary=OTHER", good, 400, "does not begin with the boundary"),
        ("multipart/related; type=application/dicom; boundary=B", good[: len(good) // 2], 400, "ends before its closing boundary"),
        ("multipart/related; type=application/dicom; boundary=" + "b" * 300, good, 400, "1 to 256 characters"),
    ]
    for content_type, body, status, reason in cases:
        response = _post(gateway, content_type, body)
        assert (response.status_code, reason in response.json()["error"]) == (status, True), (content_type, response.text)


def test_response_in_xml_when_asked_and_406_before_storing_otherwise(gateway) -> None:
    [ds] = ct_series(1, size=16)
    response = _post(gateway, "multipart/related; type=application/dicom; boundary=B", _body("B", [to_bytes(ds)]), accept="application/dicom+xml")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/dicom+xml"
    root = ET.fromstring(response.content)
    ns = {"d": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}
    uid = root.find("d:DicomAttribute[@keyword='ReferencedSOPSequence']/d:Item/d:DicomAttribute[@tag='00081155']/d:Value", ns)
    assert uid is not None and uid.text == ds.SOPInstanceUID
    [other] = ct_series(1, size=16)
    refused = _post(gateway, "multipart/related; type=application/dicom; boundary=B", _body("B", [to_bytes(other)]), accept="text/html")
    assert refused.status_code == 406
    gateway.wait_idle()
    assert gateway.get(f"/dicom-web/instances?SOPInstanceUID={other.SOPInstanceUID}")[1] == []


def test_orthanc_stows_to_the_gateway(gateway, tmp_path) -> None:
    """Orthanc's DICOMweb plugin as the STOW-RS client (its boundaries are 73 characters long)."""
    import json
    import time
    import urllib.request

    from tests.peers.orthanc import run_orthanc

    config = {
        "DicomWeb": {
            "Enable": True,
            "Servers": {"pacsgw": {"Url": f"{gateway.base_url}/dicom-web/", "HttpHeaders": gateway.auth_headers}},
        }
    }
    series = ct_series(2, size=32)
    with run_orthanc(tmp_path / "orthanc", plugins=["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"], config=config) as orthanc:

        def post(path: str, body: bytes, content_type: str = "application/json") -> object:
            request = urllib.request.Request(orthanc.base_url + path, data=body, method="POST", headers={"Content-Type": content_type})
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.load(response)

        ids = [post("/instances", to_bytes(ds), "application/dicom")["ID"] for ds in series]  # type: ignore[index]
        post("/dicom-web/servers/pacsgw/stow", json.dumps({"Resources": ids, "Synchronous": True}).encode())
    deadline = time.monotonic() + 30
    while True:
        status, found = gateway.get(f"/dicom-web/studies/{series[0].StudyInstanceUID}/instances")
        if status == 200 and len(found) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sorted(i["00080018"]["Value"][0] for i in found) == sorted(ds.SOPInstanceUID for ds in series)
