"""QIDO-RS extensions of the gateway: the studies' reading status (StudyStatusID) and sorting with ``orderby``."""

from __future__ import annotations

import pytest

from tests.conftest import storescu
from tests.factory import Patient, ct_series, write_files

# Name, study date, instances. Read without accents: Ân, Bùi, Đặng, Nguyễn; by bytes Đặng would come last.
STUDIES = [("Nguyễn^Văn An", "20240301", 1), ("Đặng^Thị Thu", "20240301", 2), ("Bùi^Minh", "20240302", 3), ("Ân^Hà", "20240303", 4)]
STATUS = "0032000A"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory):
    from tests.gateway_process import GatewayProcess

    tmp = tmp_path_factory.mktemp("qido-order")
    gw = GatewayProcess(tmp / "gw", {})
    gw.start()
    datasets, uids = [], {}
    for n, (name, date, count) in enumerate(STUDIES):
        patient = Patient(patient_id=f"MRN-O{n}", name=name, citizen_id=f"00140000000{n}", insurance_number=f"HS40100000000{n}")
        series = ct_series(count, size=16, patient=patient, study_date=date, accession=f"ACC-O{n}")
        datasets += series
        uids[name] = series[0].StudyInstanceUID
    assert storescu(gw.dicom_port, write_files(datasets, tmp / "files")).returncode == 0
    gw.wait_idle()
    report = {"findings": "Bình thường.", "impression": "Không thấy bất thường."}
    assert gw.send("PUT", f"/studies/{uids['Đặng^Thị Thu']}/report", report)[0] == 200  # in progress
    assert gw.send("PUT", f"/studies/{uids['Bùi^Minh']}/report", report)[0] == 200
    assert gw.send("POST", f"/studies/{uids['Bùi^Minh']}/report/final")[0] == 200  # read
    yield gw, uids
    gw.kill()


def _names(body: list[dict]) -> list[str]:
    return [study["00100010"]["Value"][0]["Alphabetic"] for study in body]


def test_studies_carry_their_reading_status(archive) -> None:
    gw, uids = archive
    status, body = gw.get("/dicom-web/studies")
    assert status == 200
    assert {s["0020000D"]["Value"][0]: s[STATUS] for s in body} == {
        uids["Nguyễn^Văn An"]: {"vr": "CS", "Value": ["UNREAD"]},
        uids["Đặng^Thị Thu"]: {"vr": "CS", "Value": ["IN PROGRESS"]},
        uids["Bùi^Minh"]: {"vr": "CS", "Value": ["READ"]},
        uids["Ân^Hà"]: {"vr": "CS", "Value": ["UNREAD"]},
    }
    assert _names(gw.get("/dicom-web/studies?StudyStatusID=READ")[1]) == ["Bùi^Minh"]
    assert sorted(_names(gw.get("/dicom-web/studies?StudyStatusID=UNREAD%5CIN%20PROGRESS")[1])) == ["Nguyễn^Văn An", "Ân^Hà", "Đặng^Thị Thu"]
    assert sorted(_names(gw.get("/dicom-web/studies?0032000A=READ,IN%20PROGRESS")[1])) == ["Bùi^Minh", "Đặng^Thị Thu"]
    series = gw.get("/dicom-web/series?StudyStatusID=IN%20PROGRESS&includefield=StudyStatusID")[1]
    assert [s[STATUS]["Value"] for s in series] == [["IN PROGRESS"]]
    status, body = gw.get("/dicom-web/studies?StudyStatusID=DONE")
    assert status == 400 and "StudyStatusID" in body["error"] and "UNREAD" in body["error"]


def test_orderby_sorts_before_paging(archive) -> None:
    gw, _ = archive
    assert _names(gw.get("/dicom-web/studies?orderby=PatientName")[1]) == ["Ân^Hà", "Bùi^Minh", "Đặng^Thị Thu", "Nguyễn^Văn An"]
    assert _names(gw.get("/dicom-web/studies?orderby=-PatientName")[1]) == ["Nguyễn^Văn An", "Đặng^Thị Thu", "Bùi^Minh", "Ân^Hà"]
    assert _names(gw.get("/dicom-web/studies?orderby=-NumberOfStudyRelatedInstances&limit=2")[1]) == ["Ân^Hà", "Bùi^Minh"]
    assert _names(gw.get("/dicom-web/studies?orderby=StudyStatusID,PatientName")[1]) == [
        "Ân^Hà", "Nguyễn^Văn An", "Đặng^Thị Thu", "Bùi^Minh"
    ]  # fmt: skip  # unread (by name), in progress, read
    ascending = _names(gw.get("/dicom-web/studies?orderby=StudyDate")[1])
    assert ascending[2:] == ["Bùi^Minh", "Ân^Hà"] and set(ascending[:2]) == {"Nguyễn^Văn An", "Đặng^Thị Thu"}
    assert _names(gw.get("/dicom-web/studies?orderby=-StudyDate")[1])[:2] == ["Ân^Hà", "Bùi^Minh"]
    for order in ("StudyDate", "-StudyDate", "ModalitiesInStudy"):  # ties everywhere: paging must still be stable
        paged = []
        for offset in range(4):
            status, page = gw.get(f"/dicom-web/studies?orderby={order}&limit=1&offset={offset}")
            assert status == 200
            paged += _names(page)
        assert paged == _names(gw.get(f"/dicom-web/studies?orderby={order}")[1]) and len(set(paged)) == 4, order
    instances = gw.get("/dicom-web/instances?orderby=-InstanceNumber&limit=3")[1]
    assert [i["00200013"]["Value"][0] for i in instances] == [4, 3, 3]


def test_bad_orderby_is_refused_with_a_reason(archive) -> None:
    gw, _ = archive
    for order, reason in [
        ("PatientWeight", "cannot sort study results by 'PatientWeight'"),
        ("SeriesNumber", "cannot sort study results by 'SeriesNumber'"),
        ("Nonsense", "cannot sort study results by 'Nonsense'"),
        ("StudyDate,-StudyDate", "given twice"),
    ]:
        status, body = gw.get(f"/dicom-web/studies?orderby={order}")
        assert status == 400 and reason in body["error"], order
    status, body = gw.get("/dicom-web/studies?orderby=StudyDate&orderby=PatientName")
    assert status == 400 and "more than once" in body["error"]
