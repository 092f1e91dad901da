"""C-FIND SCP against DCMTK findscu and pynetdicom: both information models, every level, PS3.4 matching, cancel."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT,
)

from tests.conftest import storescu
from tests.factory import CITIZEN_ID, INSURANCE_NUMBER, Patient, ct_series, write_files
from tests.peers.orthanc import DCMTK_ENV, dcmtk_binary

OTHER = Patient(patient_id="MRN-0002", name="Lê^Thị Hoa", birth_date="19900505", sex="F", citizen_id="001190000002", insurance_number="HN4010000000002")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory):
    """A gateway holding two studies of one patient (CT 3 + 2 instances in two series, MR 1) and one of another."""
    from tests.gateway_process import GatewayProcess

    tmp = tmp_path_factory.mktemp("find")
    gateway = GatewayProcess(tmp / "gw", {"PACSGW_DICOM_QUERY_AETS": "FINDSCU,PYSCU"})
    gateway.start()
    first = ct_series(3, study_date="20240110", accession="ACC-A") + []
    second_series = ct_series(2, study_uid=first[0].StudyInstanceUID, study_date="20240110", accession="ACC-A", seed=1)
    for ds in second_series:
        ds.SeriesNumber = 2
    later = ct_series(1, study_date="20240315", accession="ACC-B")
    later[0].Modality = "MR"
    other = ct_series(1, patient=OTHER, study_date="20240201", accession="ACC-C")
    datasets = first + second_series + later + other
    result = storescu(gateway.dicom_port, write_files(datasets, tmp / "files"))
    assert result.returncode == 0, result.stderr
    gateway.wait_idle()
    yield gateway, {"first": first, "second_series": second_series, "later": later, "other": other}
    gateway.kill()


def findscu(port: int, out: Path, *keys: str, model: str = "-S", calling: str = "FINDSCU") -> list[Dataset]:
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [dcmtk_binary("findscu"), model, "-X", "-od", str(out), "-aet", calling, "-aec", "PACSGW",
         *[arg for key in keys for arg in ("-k", key)], "127.0.0.1", str(port)],
        env={**os.environ, **DCMTK_ENV}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_study_root_study_level_by_patient_id_and_other_ids(archive, tmp_path: Path) -> None:
    gateway, studies = archive
    for i, patient_id in enumerate(("MRN-0001", CITIZEN_ID, INSURANCE_NUMBER)):
        found = findscu(
            gateway.dicom_port, tmp_path / str(i), "QueryRetrieveLevel=STUDY", f"PatientID={patient_id}",
            "StudyInstanceUID", "StudyDate", "AccessionNumber", "PatientName", "ModalitiesInStudy",
            "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
        )  # fmt: skip
        assert [ds.AccessionNumber for ds in found] == ["ACC-B", "ACC-A"], patient_id  # newest first
        first = next(ds for ds in found if ds.AccessionNumber == "ACC-A")
        assert first.StudyInstanceUID == studies["first"][0].StudyInstanceUID
        assert first.NumberOfStudyRelatedSeries == 2 and first.NumberOfStudyRelatedInstances == 5
        assert first.PatientName == "Nguyễn^Văn An" and first.SpecificCharacterSet == "ISO_IR 192"
        assert first.RetrieveAETitle == "PACSGW"
        assert "PatientBirthDate" not in first  # only the keys asked for, and the level's unique key


@pytest.mark.parametrize(
    "keys, accessions",
    [
        (("PatientName=nguyen van an",), ["ACC-B", "ACC-A"]),  # case and accents ignored
        (("PatientName=NGUY*",), ["ACC-B", "ACC-A"]),
        (("PatientName=l?*hoa",), ["ACC-C"]),
        (("StudyDate=20240101-20240228",), ["ACC-C", "ACC-A"]),
        (("StudyDate=20240201-",), ["ACC-B", "ACC-C"]),
        (("AccessionNumber=ACC-?",), ["ACC-B", "ACC-C", "ACC-A"]),
        (("ModalitiesInStudy=MR",), ["ACC-B"]),
        (("StudyTime=100000-110000",), ["ACC-B", "ACC-C", "ACC-A"]),
        (("ReferringPhysicianName=tran*",), ["ACC-B", "ACC-C", "ACC-A"]),
        (("PatientID=MRN-000*", "PatientBirthDate=-19850101"), ["ACC-B", "ACC-A"]),
    ],
)
def test_study_level_matching(archive, tmp_path: Path, keys: tuple[str, ...], accessions: list[str]) -> None:
    gateway, _ = archive
    found = findscu(gateway.dicom_port, tmp_path, "QueryRetrieveLevel=STUDY", "AccessionNumber", *keys)
    assert [ds.AccessionNumber for ds in found] == accessions


def test_list_of_uids(archive, tmp_path: Path) -> None:
    gateway, studies = archive
    uids = [studies["later"][0].StudyInstanceUID, studies["other"][0].StudyInstanceUID]
    found = findscu(gateway.dicom_port, tmp_path, "QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + "\\".join(uids))
    assert sorted(ds.StudyInstanceUID for ds in found) == sorted(uids)


def test_patient_root_every_level(archive, tmp_path: Path) -> None:
    gateway, studies = archive
    patients = findscu(
        gateway.dicom_port, tmp_path / "p", "QueryRetrieveLevel=PATIENT", "PatientID", "PatientName",
        "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedInstances", model="-P",
    )  # fmt: skip
    assert [(p.PatientID, p.NumberOfPatientRelatedStudies, p.NumberOfPatientRelatedInstances) for p in patients] == [
        ("MRN-0001", 2, 6),
        ("MRN-0002", 1, 1),
    ]
    study_uid = studies["first"][0].StudyInstanceUID
    series = findscu(
        gateway.dicom_port, tmp_path / "s", "QueryRetrieveLevel=SERIES", "PatientID=MRN-0001",
        f"StudyInstanceUID={study_uid}", "SeriesInstanceUID", "SeriesNumber", "Modality", "NumberOfSeriesRelatedInstances",
        model="-P",
    )  # fmt: skip
    assert [(s.SeriesNumber, s.NumberOfSeriesRelatedInstances) for s in series] == [(1, 3), (2, 2)]
    images = findscu(
        gateway.dicom_port, tmp_path / "i", "QueryRetrieveLevel=IMAGE", "PatientID=MRN-0001",
        f"StudyInstanceUID={study_uid}", f"SeriesInstanceUID={series[0].SeriesInstanceUID}", "SOPInstanceUID",
        "InstanceNumber", "SOPClassUID", model="-P",
    )  # fmt: skip
    assert [i.InstanceNumber for i in images] == [1, 2, 3]
    assert [i.SOPInstanceUID for i in images] == [ds.SOPInstanceUID for ds in studies["first"]]


def _query(identifier: Dataset, model=STUDY_ROOT, calling: str = "PYSCU", port: int = 0):
    ae = AE(ae_title=calling)
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSGW")
    assert assoc.is_established
    try:
        return [(status.Status if status else None, ds) for status, ds in assoc.send_c_find(identifier, model)]
    finally:
        assoc.release()


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_refusals(archive) -> None:
    gateway, _ = archive
    series_without_study = Dataset()
    series_without_study.QueryRetrieveLevel = "SERIES"
    series_without_study.SeriesInstanceUID = ""
    [(status, _)] = _query(series_without_study, port=gateway.dicom_port)
    assert status == 0xA900
    patient_in_study_root = Dataset()
    patient_in_study_root.QueryRetrieveLevel = "PATIENT"
    assert _query(patient_in_study_root, port=gateway.dicom_port)[0][0] == 0xA900
    bad_date = Dataset()
    bad_date.QueryRetrieveLevel = "STUDY"
    bad_date.StudyDate = "2024-01-10"
    assert _query(bad_date, port=gateway.dicom_port)[0][0] == 0xA900
    anyone = Dataset()
    anyone.QueryRetrieveLevel = "STUDY"
    assert _query(anyone, calling="STRANGER", port=gateway.dicom_port)[0][0] == 0x0124


def test_sequence_matching_and_unsupported_keys(archive) -> None:
    gateway, _ = archive
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    item = Dataset()
    item.PatientID = "001190000002"
    identifier.OtherPatientIDsSequence = Sequence([item])
    identifier.AccessionNumber = ""
    identifier.InstitutionName = ""  # not kept by the index: returned empty, with the FF01 warning
    responses = _query(identifier, port=gateway.dicom_port)
    assert [s for s, _ in responses] == [0xFF01, 0x0000]
    assert responses[0][1].AccessionNumber == "ACC-C" and responses[0][1].InstitutionName == ""


def test_cancel_stops_the_responses(archive) -> None:
    gateway, _ = archive
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(STUDY_ROOT)
    assoc = ae.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    statuses = []
    for status, _ in assoc.send_c_find(identifier, STUDY_ROOT, msg_id=7):
        statuses.append(status.get("Status"))  # an empty status: the association ended without an answer
        if status.get("Status") == 0xFF00:
            assoc.send_c_cancel(7, query_model=STUDY_ROOT)
    # The C-CANCEL is understood, never a reason to abort: the same association answers another query.
    assert assoc.is_established, "the gateway aborted the association"
    again = [status.get("Status") for status, _ in assoc.send_c_find(identifier, STUDY_ROOT, msg_id=8)]
    assoc.release()
    assert again[-1] == 0x0000
    assert statuses[-1] in (0xFE00, 0x0000)  # the gateway may have sent every match before the cancel arrived
    assert statuses[0] == 0xFF00


def test_cancel_between_matches(tmp_path: Path) -> None:
    """The service stops at the first match after a cancel, and says so (0xFE00)."""
    import asyncio

    from gateway.dimse.find import STUDY_ROOT_FIND, FindService, FindStatus, encode_identifier
    from gateway.ingest.instance import parse_instance
    from storage.index.database import IndexDatabase
    from tests.factory import to_bytes

    index = IndexDatabase.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
    index.commit([parse_instance(to_bytes(ct_series(1, accession=f"A{i}")[0])).record for i in range(5)])
    service = FindService(index, ae_title="PACSGW", allowed_aets=["PYSCU"], max_results=100)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.AccessionNumber = ""
    cancel = asyncio.Event()
    emitted: list[int] = []

    async def emit(status: int, _data: bytes) -> None:
        emitted.append(status)
        cancel.set()

    async def run() -> tuple[FindStatus, str | None]:
        return await service.run(
            STUDY_ROOT_FIND, encode_identifier(identifier, "1.2.840.10008.1.2"), "1.2.840.10008.1.2",
            calling_ae="PYSCU", cancel=cancel, emit=emit,
        )  # fmt: skip

    assert asyncio.run(run()) == (FindStatus.CANCELLED, None)
    assert emitted == [0xFF00]
    index.close()


def test_queries_are_in_the_audit_trail(archive, tmp_path: Path) -> None:
    import time

    gateway, _ = archive
    findscu(gateway.dicom_port, tmp_path, "QueryRetrieveLevel=STUDY", "PatientID=MRN-0002", "AccessionNumber")
    time.sleep(0.5)  # the trail is written in batches
    status, events = gateway.get("/audit?user=FINDSCU")
    assert status == 200
    latest = events[0]
    assert latest["action"] == "query" and latest["role"] == "dicom" and latest["source"] == "127.0.0.1"
    from storage.index.accounts import AccountStore
    from gateway.audit import audit_digest

    index = gateway.open_index()
    digest = audit_digest(AccountStore(index.engine).audit_key(), "MRN-0002")  # no secret: the index's audit key
    index.close()
    assert latest["target"].startswith("C-FIND ") and f"PatientID={digest}" in latest["target"] and latest["outcome"] == 0
    assert "MRN-0002" not in latest["target"]


def test_study_status_is_returned_and_matched(archive, tmp_path: Path) -> None:
    gateway, studies = archive
    later = studies["later"][0].StudyInstanceUID
    assert gateway.send("PUT", f"/studies/{later}/report", {"findings": "Bình thường.", "impression": ""})[0] == 200
    found = findscu(gateway.dicom_port, tmp_path / "all", "QueryRetrieveLevel=STUDY", "AccessionNumber", "0032,000A")
    assert [(ds.AccessionNumber, ds[0x0032000A].value) for ds in found] == [
        ("ACC-B", "IN PROGRESS"), ("ACC-C", "UNREAD"), ("ACC-A", "UNREAD")
    ]  # fmt: skip
    found = findscu(gateway.dicom_port, tmp_path / "read", "QueryRetrieveLevel=STUDY", "AccessionNumber", "0032,000A=IN PROGRESS")
    assert [ds.AccessionNumber for ds in found] == ["ACC-B"]
