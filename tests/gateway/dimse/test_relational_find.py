"""Relational queries, agreed by SOP Class Extended Negotiation (PS3.4 C.4.1.2.2, C.5.1.1.2 byte 1).

Agreed, an IMAGE-level (or SERIES-level) C-FIND may leave out the unique keys of the levels above: every
instance of a Patient ID, as a reading centre asks for a patient's images. Not agreed, the hierarchical rules
stand and the same query is refused (A900, identifier does not match the model).
"""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelFind as PATIENT_FIND
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as STUDY_FIND

from tests.conftest import storescu
from tests.factory import Patient, ct_series, write_files
from tests.gateway.dimse.extended_negotiation import find_negotiated


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    """A gateway holding two studies of one patient and one of another, queried by PYSCU."""
    from tests.gateway_process import GatewayProcess

    gw = GatewayProcess(tmp_path_factory.mktemp("relational") / "gw", {"PACSGW_DICOM_QUERY_AETS": "PYSCU"})
    gw.start()
    files = tmp_path_factory.mktemp("relational-files")
    lan = Patient(patient_id="MRN-LAN", name="Trần^Lan")
    first = ct_series(3, size=16, patient=lan, accession="ACC-L1")
    second = ct_series(2, size=16, patient=lan, accession="ACC-L2")
    other = ct_series(2, size=16, patient=Patient(patient_id="MRN-MAI", name="Lê^Mai"), accession="ACC-M1")
    for n, series in enumerate((first, second, other)):
        assert storescu(gw.dicom_port, write_files(series, files / str(n))).returncode == 0
    gw.wait_idle()
    yield gw, {ds.SOPInstanceUID for ds in first + second}
    gw.kill()


def _find(port: int, model: str, identifier: Dataset, *, relational: bool | None) -> tuple[list[int], list[Dataset], bytes | None]:
    return find_negotiated(port, model, identifier, None if relational is None else (b"\x01" if relational else b"\x00"))


def _by_patient(level: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    identifier.PatientID = "MRN-LAN"
    identifier.SOPInstanceUID = ""
    identifier.SeriesInstanceUID = ""
    identifier.StudyInstanceUID = ""
    return identifier


@pytest.mark.parametrize("model", [STUDY_FIND, PATIENT_FIND])
def test_an_image_query_with_only_a_patient_id_finds_every_instance_when_relational(gateway, model: str) -> None:
    gw, expected = gateway
    statuses, found, reply = _find(gw.dicom_port, model, _by_patient("IMAGE"), relational=True)
    assert reply == b"\x01"
    assert statuses[-1] == 0x0000
    assert {ds.SOPInstanceUID for ds in found} == expected
    assert {ds.PatientID for ds in found} == {"MRN-LAN"}
    assert {ds.StudyInstanceUID for ds in found} and all(ds.SeriesInstanceUID for ds in found)


def test_a_series_query_with_only_a_patient_id_finds_its_series_when_relational(gateway) -> None:
    gw, _ = gateway
    identifier = _by_patient("SERIES")
    del identifier.SOPInstanceUID
    statuses, found, _ = _find(gw.dicom_port, STUDY_FIND, identifier, relational=True)
    assert statuses[-1] == 0x0000
    assert len({ds.SeriesInstanceUID for ds in found}) == 2


@pytest.mark.parametrize("relational", [False, None])
def test_without_relational_queries_the_hierarchy_is_kept(gateway, relational: bool | None) -> None:
    gw, _ = gateway
    statuses, found, reply = _find(gw.dicom_port, STUDY_FIND, _by_patient("IMAGE"), relational=relational)
    assert found == [] and statuses == [0xA900]
    assert reply == (b"\x00" if relational is False else None)
