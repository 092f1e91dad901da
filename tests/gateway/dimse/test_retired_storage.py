"""The retired ultrasound and nuclear-medicine storage classes old modalities still send (PS3.6 Table A-1):
accepted at association, stored, indexed and found again, as the current classes are."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

from gateway.storage_classes import retired_storage_classes
from tests.factory import ct_series


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    from tests.gateway_process import GatewayProcess

    gw = GatewayProcess(tmp_path_factory.mktemp("retired") / "gw", {"PACSGW_DICOM_QUERY_AETS": "PYSCU"})
    gw.start()
    yield gw
    gw.kill()


def test_the_table_names_the_three_retired_classes() -> None:
    assert retired_storage_classes() == ("1.2.840.10008.5.1.4.1.1.3", "1.2.840.10008.5.1.4.1.1.5", "1.2.840.10008.5.1.4.1.1.6")


@pytest.mark.parametrize("sop_class", ["1.2.840.10008.5.1.4.1.1.3", "1.2.840.10008.5.1.4.1.1.5", "1.2.840.10008.5.1.4.1.1.6"])
def test_a_retired_storage_class_is_stored_and_found(gateway, sop_class: str) -> None:
    (ds,) = ct_series(1, size=16)
    ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.Modality = "NM" if sop_class.endswith(".5") else "US"
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(sop_class)
    ae.add_requested_context(FIND)
    assoc = ae.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    assert assoc.is_established
    assert int(assoc.send_c_store(ds).Status) == 0x0000
    gateway.wait_idle()
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = ds.StudyInstanceUID
    query.SeriesInstanceUID = ds.SeriesInstanceUID
    query.SOPInstanceUID = ""
    query.SOPClassUID = ""
    found = [found for status, found in assoc.send_c_find(query, FIND) if status.Status in (0xFF00, 0xFF01)]
    assoc.release()
    assert [(f.SOPInstanceUID, f.SOPClassUID) for f in found] == [(ds.SOPInstanceUID, sop_class)]
