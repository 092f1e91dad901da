"""Modality Performed Procedure Step SCP: a pynetdicom modality starts, completes and discontinues worklist steps."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep as MPPS
from pynetdicom.sop_class import ModalityWorklistInformationFind as MWL

from tests.gateway.emr.hl7.client import ack_code, send
from tests.gateway.emr.hl7.messages import Order, Person, omi, orm

LAN = Person(mrn="MRN-PPS", family="Phạm", given="Thị Lan", citizen="", insurance="")
STUDY = "1.2.826.0.1.3680043.10.1337.88.1"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from tests.gateway_process import GatewayProcess

    gw = GatewayProcess(tmp_path_factory.mktemp("mpps") / "gw", {"PACSGW_DICOM_WORKLIST_AETS": "CT01"})
    gw.start()
    orders = [
        orm("NW", LAN, Order("PP-1", "PPS-ACC1", station="CT01")),
        orm("NW", LAN, Order("PP-2", "PPS-ACC2", station="CT01")),
        omi("NW", LAN, Order("PP-3", "PPS-ACC3", modality="CT", station="CT01", study_uid=STUDY)),
    ]
    assert [ack_code(a) for a in send(gw.hl7_port, *orders)] == ["AA"] * 3
    yield gw
    gw.kill()


def _association(gateway, calling: str = "CT01"):
    ae = AE(ae_title=calling)
    ae.add_requested_context(MPPS)
    ae.add_requested_context(MWL)
    assoc = ae.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    assert assoc.is_established
    return assoc


def _worklist(assoc) -> list[str]:
    query = Dataset()
    query.AccessionNumber = ""
    query.ScheduledProcedureStepSequence = Sequence([])
    return sorted(str(ds.AccessionNumber) for status, ds in assoc.send_c_find(query, MWL) if status.Status == 0xFF00)


def _step(accession: str = "", study_uid: str = "", status: str = "IN PROGRESS", patient_id: str = "MRN-PPS") -> Dataset:
    ds = Dataset()
    item = Dataset()
    item.StudyInstanceUID = study_uid or generate_uid()  # Type 1: a modality that makes its own sends that one
    item.AccessionNumber = accession
    item.ScheduledProcedureStepID = ""
    ds.ScheduledStepAttributesSequence = Sequence([item])
    ds.PatientID = patient_id
    ds.PerformedProcedureStepID = "PPS-1"
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedProcedureStepStartDate = "20261201"
    ds.PerformedProcedureStepStartTime = "103000"
    ds.PerformedProcedureStepStatus = status
    ds.Modality = "CT"
    return ds


def _set(status: str) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20261201"
    ds.PerformedProcedureStepEndTime = "104500"
    return ds


def test_a_started_step_leaves_the_worklist_and_completes(gateway) -> None:
    assoc = _association(gateway)
    try:
        assert _worklist(assoc) == ["PPS-ACC1", "PPS-ACC2", "PPS-ACC3"]
        uid = generate_uid()
        status, _ = assoc.send_n_create(_step("PPS-ACC1"), MPPS, uid)
        assert status.Status == 0x0000
        assert _worklist(assoc) == ["PPS-ACC2", "PPS-ACC3"]  # no other modality starts it
        status, _ = assoc.send_n_set(_set("COMPLETED"), MPPS, uid)
        assert status.Status == 0x0000
        status, _ = assoc.send_n_set(_set("DISCONTINUED"), MPPS, uid)
        # completed: may no longer be updated (PS3.4 Table F.7.2-2)
        assert (status.Status, status.ErrorID) == (0x0110, 0xA710)
        assert status.ErrorComment == "Performed Procedure Step Object may no longer be updated"
        assert _worklist(assoc) == ["PPS-ACC2", "PPS-ACC3"]
    finally:
        assoc.release()
    from storage.index.worklist import OrderRef, status_of

    index = gateway.open_index()
    try:
        with index.engine.connect() as conn:
            assert [s for _, s, _ in status_of(conn, OrderRef(placer="PP-1"))] == ["COMPLETED"]
    finally:
        index.close()


def test_a_discontinued_step_is_back_on_the_worklist(gateway) -> None:
    assoc = _association(gateway)
    try:
        uid = generate_uid()
        assert assoc.send_n_create(_step(study_uid=STUDY), MPPS, uid)[0].Status == 0x0000  # by its Study Instance UID
        assert "PPS-ACC3" not in _worklist(assoc)
        assert assoc.send_n_set(_set("IN PROGRESS"), MPPS, uid)[0].Status == 0x0000  # still under way
        assert "PPS-ACC3" not in _worklist(assoc)
        assert assoc.send_n_set(_set("DISCONTINUED"), MPPS, uid)[0].Status == 0x0000
        assert "PPS-ACC3" in _worklist(assoc)
    finally:
        assoc.release()


def test_refusals(gateway) -> None:
    assoc = _association(gateway)
    try:
        uid = generate_uid()
        assert assoc.send_n_create(_step("PPS-ACC2", status="COMPLETED"), MPPS, uid)[0].Status == 0x0106  # must start IN PROGRESS
        no_steps = _step("PPS-ACC2")
        del no_steps.ScheduledStepAttributesSequence
        assert assoc.send_n_create(no_steps, MPPS, uid)[0].Status == 0x0120
        assert assoc.send_n_set(_set("COMPLETED"), MPPS, generate_uid())[0].Status == 0x0112  # no such step
        # Another patient's step with this accession number (a number typed wrong) is not taken.
        assert assoc.send_n_create(_step("PPS-ACC2", patient_id="MRN-SOMEONE"), MPPS, generate_uid())[0].Status == 0x0000
        assert "PPS-ACC2" in _worklist(assoc)
        assert assoc.send_n_create(_step("PPS-ACC2"), MPPS, uid)[0].Status == 0x0000
        assert assoc.send_n_create(_step("PPS-ACC2"), MPPS, uid)[0].Status == 0x0111  # the same UID again
        no_status = _step("PPS-ACC2")
        del no_status.PerformedProcedureStepStatus
        assert assoc.send_n_create(no_status, MPPS, generate_uid())[0].Status == 0x0120
        assert assoc.send_n_set(_set("FINISHED"), MPPS, uid)[0].Status == 0x0106
    finally:
        assoc.release()
    stranger = AE(ae_title="STRANGER")
    stranger.add_requested_context(MPPS)
    other = stranger.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    try:
        assert other.send_n_create(_step("PPS-ACC2"), MPPS, generate_uid())[0].Status == 0x0124
    finally:
        other.release()
    assert "MRN-PPS" not in gateway.log_tail() and "MPPS N-CREATE from STRANGER refused" in gateway.log_tail()
