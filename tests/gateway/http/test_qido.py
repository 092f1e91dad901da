"""QIDO-RS at every level, through dicomweb-client (PyPI) as a DICOMweb application would use it."""

from __future__ import annotations

from pathlib import Path

import pytest
from dicomweb_client.api import DICOMwebClient

from tests.conftest import storescu
from tests.factory import CITIZEN_ID, Patient, ct_series, write_files


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory):
    from tests.gateway_process import GatewayProcess

    tmp = tmp_path_factory.mktemp("qido")
    gateway = GatewayProcess(tmp / "gw", {})
    gateway.start()
    study = ct_series(3, accession="ACC-1", study_date="20240110")
    second = ct_series(2, study_uid=study[0].StudyInstanceUID, accession="ACC-1", study_date="20240110", seed=2)
    for ds in second:
        ds.SeriesNumber, ds.Modality, ds.SeriesDescription = 2, "SR", "Báo cáo"
    other = ct_series(1, patient=Patient(patient_id="MRN-9", name="Phạm^Minh", citizen_id="001000000009"), accession="ACC-2")
    assert storescu(gateway.dicom_port, write_files(study + second + other, tmp / "files")).returncode == 0
    gateway.wait_idle()
    yield gateway, study, second, other
    gateway.kill()


def _client(gateway) -> DICOMwebClient:
    return DICOMwebClient(url=f"{gateway.base_url}/dicom-web", headers=gateway.auth_headers)


def _values(results: list[dict], tag: str) -> list:
    return [r[tag]["Value"][0] for r in results]


def test_studies_series_instances(archive) -> None:
    gateway, study, second, _ = archive
    client = _client(gateway)
    studies = client.search_for_studies(search_filters={"PatientID": CITIZEN_ID})
    assert _values(studies, "0020000D") == [study[0].StudyInstanceUID]
    assert studies[0]["00080061"]["Value"] == ["CT", "SR"]
    assert studies[0]["00081190"]["Value"][0].endswith(f"/dicom-web/studies/{study[0].StudyInstanceUID}")

    series = client.search_for_series(study_instance_uid=study[0].StudyInstanceUID)
    assert _values(series, "00200011") == [1, 2]  # series number order
    assert _values(series, "00201209") == [3, 2]
    assert _values(series, "0008103E") == ["Axial 5mm", "Báo cáo"]
    only_sr = client.search_for_series(search_filters={"Modality": "SR"})
    assert _values(only_sr, "0020000E") == [second[0].SeriesInstanceUID]

    instances = client.search_for_instances(
        study_instance_uid=study[0].StudyInstanceUID, series_instance_uid=study[0].SeriesInstanceUID
    )
    assert _values(instances, "00080018") == [ds.SOPInstanceUID for ds in study]
    assert instances[0]["00081190"]["Value"][0].endswith(f"/instances/{study[0].SOPInstanceUID}")
    assert len(client.search_for_instances(study_instance_uid=study[0].StudyInstanceUID)) == 5
    assert len(client.search_for_instances(search_filters={"InstanceNumber": "1"})) == 3


def test_paging_total_and_includefield(archive) -> None:
    gateway, study, *_ = archive
    status, body = gateway.get(f"/dicom-web/studies/{study[0].StudyInstanceUID}/instances?limit=2&offset=1")
    assert status == 200 and len(body) == 2
    status, first_page = gateway.get("/dicom-web/instances?limit=4")
    status, second_page = gateway.get("/dicom-web/instances?limit=4&offset=4")
    seen = [r["00080018"]["Value"][0] for r in first_page + second_page]
    assert len(seen) == 6 == len(set(seen))  # stable order, nothing twice
    status, body = gateway.get("/dicom-web/series?includefield=all&PatientName=pham*")
    assert status == 200 and len(body) == 1
    assert body[0]["00100010"]["Value"][0]["Alphabetic"] == "Phạm^Minh"


def test_level_specific_refusals(archive) -> None:
    gateway, study, *_ = archive
    status, body = gateway.get("/dicom-web/studies?SOPInstanceUID=1.2.3")
    assert status == 400 and "not a supported matching key at study level" in body["error"]
    status, body = gateway.get("/dicom-web/studies/1.2.03/series")
    assert status == 400 and "not a valid DICOM UID" in body["error"]
    status, body = gateway.get(f"/dicom-web/studies/{study[0].StudyInstanceUID}/series?StudyInstanceUID=1.2.3")
    assert status == 400 and "contradicts the path" in body["error"]


def test_find_and_qido_agree(archive, tmp_path: Path) -> None:
    """The same matching: a wildcard name and a date range find the same studies over both protocols."""
    gateway, *_ = archive
    status, body = gateway.get("/dicom-web/studies?PatientName=NGUY*&StudyDate=20240101-20240131")
    assert status == 200 and [r["00080050"]["Value"][0] for r in body] == ["ACC-1"]


def test_fuzzymatching_matches_any_word_of_a_name(archive) -> None:
    _, study, _, other = archive
    client = _client(archive[0])
    found = client.search_for_studies(search_filters={"PatientName": "an nguyen"}, fuzzymatching=True)
    assert _values(found, "0020000D") == [study[0].StudyInstanceUID]
    assert _values(client.search_for_studies(search_filters={"PatientName": "MINH"}, fuzzymatching=True), "0020000D") == [other[0].StudyInstanceUID]
    assert client.search_for_studies(search_filters={"PatientName": "minh"}) == []
    assert client.search_for_studies(search_filters={"PatientName": "minh"}, fuzzymatching=False) == []
    series = client.search_for_series(search_filters={"PatientName": "van"}, fuzzymatching=True)
    assert {s["0020000D"]["Value"][0] for s in series} == {study[0].StudyInstanceUID}


def test_results_in_xml_when_asked_and_406_for_what_is_not_offered(archive) -> None:
    import re
    import xml.etree.ElementTree as ET

    import requests

    gateway, study, _, _ = archive
    url = f"{gateway.base_url}/dicom-web/studies?PatientID=MRN-0001"
    response = requests.get(url, headers={**gateway.auth_headers, "Accept": 'multipart/related; type="application/dicom+xml"'}, timeout=10)
    assert response.status_code == 200 and 'type="application/dicom+xml"' in response.headers["Content-Type"]
    boundary = re.search(r"boundary=([^;]+)", response.headers["Content-Type"]).group(1)  # type: ignore[union-attr]
    [part] = response.content.split(f"--{boundary}".encode())[1:-1]
    root = ET.fromstring(part.split(b"\r\n\r\n", 1)[1])
    ns = {"d": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}
    assert root.find("d:DicomAttribute[@keyword='StudyInstanceUID']/d:Value", ns).text == study[0].StudyInstanceUID  # type: ignore[union-attr]
    for accept in ("application/dicom+json;q=0, text/html", "multipart/related; type=application/dicom"):
        refused = requests.get(url, headers={**gateway.auth_headers, "Accept": accept}, timeout=10)
        assert refused.status_code == 406, accept
