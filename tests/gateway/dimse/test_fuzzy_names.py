"""Fuzzy semantic matching of person names, agreed by SOP Class Extended Negotiation (PS3.4 C.5.1.1.2, K.5.1.1.2).

Asked for, ``hong``-like words find a patient by any word of the name in C-FIND
and the modality worklist; not asked for, the literal matching stays.
"""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pynetdicom.sop_class import ModalityWorklistInformationFind as MWL
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

from tests.conftest import storescu
from tests.factory import Patient, ct_series, write_files
from tests.gateway.dimse.extended_negotiation import find_negotiated
from tests.gateway.dimse.test_worklist import ORDERS
from tests.gateway.emr.hl7.client import ack_code, send


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    """A gateway with the worklist tests' HL7 orders, queried by PYSCU."""
    from tests.gateway_process import GatewayProcess

    env = {"PACSGW_DICOM_WORKLIST_AETS": "PYSCU", "PACSGW_DICOM_QUERY_AETS": "PYSCU"}
    gw = GatewayProcess(tmp_path_factory.mktemp("fuzzy") / "gw", env)
    gw.start()
    assert [ack_code(a) for a in send(gw.hl7_port, *ORDERS.values())] == ["AA"] * len(ORDERS)
    yield gw
    gw.kill()


def _query(port: int, model: str, identifier: Dataset, *, fuzzy: bool | None) -> tuple[list[Dataset], bytes | None]:
    """Matches, and the service-class-application-information the gateway answered (None: no reply item)."""
    offered = None if fuzzy is None else b"\x01\x01" + (b"\x01" if fuzzy else b"\x00") + b"\x00"
    _, found, reply = find_negotiated(port, model, identifier, offered)
    return found, reply


def test_c_find_names_match_fuzzily_only_when_negotiated(gateway, tmp_path) -> None:
    hong = ct_series(1, size=16, patient=Patient(patient_id="MRN-HONG", name="Nguyễn^Thị Hồng"), accession="ACC-HONG")
    assert storescu(gateway.dicom_port, write_files(hong, tmp_path)).returncode == 0
    gateway.wait_idle()
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientName = "hong nguyen"
    identifier.StudyInstanceUID = ""
    found, reply = _query(gateway.dicom_port, FIND, identifier, fuzzy=True)
    assert [ds.StudyInstanceUID for ds in found] == [hong[0].StudyInstanceUID]
    assert reply == b"\x01\x00\x01\x00"  # relational and fuzzy agreed; date-time matching declined
    assert _query(gateway.dicom_port, FIND, identifier, fuzzy=False) == ([], b"\x01\x00\x00\x00")
    assert _query(gateway.dicom_port, FIND, identifier, fuzzy=None) == ([], None)


@pytest.mark.parametrize(("fuzzy", "expected"), [(True, ["W-ACC2"]), (False, []), (None, [])])
def test_worklist_names_match_fuzzily_only_when_negotiated(gateway, fuzzy: bool | None, expected: list[str]) -> None:
    identifier = Dataset()
    identifier.PatientName = "hoa"  # Lê^Thị Hoa
    identifier.AccessionNumber = ""
    found, _ = _query(gateway.dicom_port, MWL, identifier, fuzzy=fuzzy)
    assert [ds.AccessionNumber for ds in found] == expected
