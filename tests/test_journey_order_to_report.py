"""Journey: from the order to the report, with every peer real. The EMR (FHIR server) knows the patient and the order;
the RIS sends the order over HL7 v2; the modality (pynetdicom) pulls it from the worklist, reports the step started
(MPPS), sends its images with the accession and reports the step completed; the study is published to FHIR linked to the Patient and the ServiceRequest; the radiologist signs a
report, which reaches FHIR as a DiagnosticReport and the EMR's MLLP listener as ORU^R01. Then an A40 merge moves a
duplicate patient's study to the surviving record."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hl7
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, ModalityPerformedProcedureStep, ModalityWorklistInformationFind

from tests.factory import Patient, ct_series
from tests.gateway.emr.hl7.client import ack_code, send
from tests.gateway.emr.hl7.messages import Order, Person, a40, orm
from tests.peers.fhir import run_fhir_server
from tests.peers.mllp import mllp_listener
from tests.peers.test_fhir_peer import search
from tests.test_journey_emr import IMPRESSION, emr_env, emr_order, emr_patient, imaging_studies, sign_report, wait_for
from tests.gateway_process import GatewayProcess

AN = Person(mrn="MRN-J1", citizen="079203000101", insurance="DN4790000000101")


@pytest.fixture
def emr_mllp() -> Iterator[tuple[int, list[hl7.Message]]]:
    with mllp_listener() as listener:
        yield listener


def _modality(gateway: GatewayProcess) -> AE:
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.add_requested_context(ModalityPerformedProcedureStep)
    ae.add_requested_context(CTImageStorage)
    return ae


def _performed(item: Dataset, status: str) -> Dataset:
    """The modality's MPPS attributes for the worklist item (N-CREATE), or its final status (N-SET)."""
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    if status == "IN PROGRESS":
        scheduled = Dataset()
        scheduled.StudyInstanceUID, scheduled.AccessionNumber = item.StudyInstanceUID, item.AccessionNumber
        ds.ScheduledStepAttributesSequence = [scheduled]
        ds.PatientID, ds.Modality, ds.PerformedStationAETitle = item.PatientID, "CT", "CT01"
    return ds


def _worklist(gateway: GatewayProcess) -> list[Dataset]:
    query = Dataset()
    query.PatientName = query.PatientID = query.AccessionNumber = query.StudyInstanceUID = ""
    step = Dataset()
    step.ScheduledStationAETitle = "CT01"
    step.Modality = "CT"
    step.ScheduledProcedureStepStartDate = ""
    query.ScheduledProcedureStepSequence = [step]
    assoc = _modality(gateway).associate("127.0.0.1", gateway.dicom_port, ae_title=gateway.ae_title)
    assert assoc.is_established
    try:
        return [found for status, found in assoc.send_c_find(query, ModalityWorklistInformationFind) if status.Status in (0xFF00, 0xFF01)]
    finally:
        assoc.release()


def test_order_worklist_images_fhir_report_oru_and_merge(tmp_path: Path, emr_mllp) -> None:
    mllp_port, oru_received = emr_mllp
    with run_fhir_server(tmp_path / "fhir") as base:
        subject = emr_patient(base, mrn="MRN-J1", citizen="079203000101", insurance="DN4790000000101")
        request = emr_order(base, subject, "ACC-J1")
        env = {**emr_env(base), "PACSGW_DICOM_WORKLIST_AETS": "CT01",
               "PACSGW_HL7_OUTBOUND_HOST": "127.0.0.1", "PACSGW_HL7_OUTBOUND_PORT": str(mllp_port)}  # fmt: skip
        gateway = GatewayProcess(tmp_path / "gw", env)
        gateway.env["PACSGW_HTTP_PUBLIC_URL"] = gateway.base_url
        gateway.start()
        try:
            # The RIS orders a chest CT for station CT01.
            [ack] = send(gateway.hl7_port, orm("NW", AN, Order("PL-J1", "ACC-J1", station="CT01", when="202612011030")))
            assert ack_code(ack) == "AA"
            # The modality pulls it: demographics are never typed twice.
            [item] = _worklist(gateway)
            assert (item.AccessionNumber, item.PatientID, str(item.PatientName)) == ("ACC-J1", "MRN-J1", "Nguyễn^Văn An")
            series = ct_series(3, size=16, patient=Patient(patient_id="MRN-J1", citizen_id=AN.citizen, insurance_number=AN.insurance),
                               accession=item.AccessionNumber, study_uid=item.StudyInstanceUID)  # fmt: skip
            assoc = _modality(gateway).associate("127.0.0.1", gateway.dicom_port, ae_title=gateway.ae_title)
            assert assoc.is_established
            try:
                # The exam starts (MPPS): the item leaves the worklist, no other modality takes it.
                step = str(generate_uid())
                assert assoc.send_n_create(_performed(item, "IN PROGRESS"), ModalityPerformedProcedureStep, step)[0].Status == 0
                assert _worklist(gateway) == []
                assert [assoc.send_c_store(ds).Status for ds in series] == [0, 0, 0]
                assert assoc.send_n_set(_performed(item, "COMPLETED"), ModalityPerformedProcedureStep, step)[0].Status == 0
            finally:
                assoc.release()
            # Published to the EMR, on the right patient and order; the worklist item is done.
            [study] = wait_for("ImagingStudy", lambda: imaging_studies(base, item.StudyInstanceUID))
            assert study["subject"]["reference"] == subject and study["basedOn"] == [{"reference": request}]
            assert study["numberOfInstances"] == 3
            assert wait_for("order completed", lambda: _worklist(gateway) == [] or None)
            # The report goes back: a DiagnosticReport in FHIR and an ORU^R01 on MLLP.
            sign_report(gateway, item.StudyInstanceUID)
            [report] = wait_for("DiagnosticReport", lambda: search(base, "DiagnosticReport", subject=subject))
            assert report["status"] == "final" and report["conclusion"] == IMPRESSION
            assert report["imagingStudy"] == [{"reference": f"ImagingStudy/{study['id']}"}]
            [oru] = wait_for("ORU^R01", lambda: oru_received)
            assert str(oru.segment("MSH")(9)).startswith("ORU^R01") and "ACC-J1" in str(oru)
            assert IMPRESSION in str(oru)
            # The EMR files it under its order (placer number) and patient, as they are now.
            assert str(oru.segment("ORC")(2)) == "PL-J1" and str(oru.segment("OBR")(2)) == "PL-J1"
            assert str(oru.segment("PID")(3)).startswith("MRN-J1^") and str(oru.segment("PID")(5)) == "Nguyễn^Văn An"

            # A duplicate record (another MRN) with its own study, merged into the survivor by ADT^A40.
            duplicate = ct_series(1, size=16, patient=Patient(patient_id="MRN-J1-DUP", citizen_id="", insurance_number=""),
                                  accession="ACC-J2")  # fmt: skip
            assoc = _modality(gateway).associate("127.0.0.1", gateway.dicom_port, ae_title=gateway.ae_title)
            assert assoc.is_established and assoc.send_c_store(duplicate[0]).Status == 0
            assoc.release()
            gateway.wait_idle()
            [merged] = send(gateway.hl7_port, a40(AN, "MRN-J1-DUP"))
            assert ack_code(merged) == "AA"
            status, studies = gateway.get("/dicom-web/studies?PatientID=MRN-J1")
            assert status == 200
            assert {s["0020000D"]["Value"][0] for s in studies} == {item.StudyInstanceUID, duplicate[0].StudyInstanceUID}
            # The old MRN is kept as one of the survivor's identifiers: searching by it finds the survivor.
            status, by_old_id = gateway.get("/dicom-web/studies?PatientID=MRN-J1-DUP")
            assert {s["00100020"]["Value"][0] for s in by_old_id} == {"MRN-J1"}
            gateway.audit_events(lambda trail: any(e["action"] == "patient-merge" for e in trail))
        finally:
            gateway.kill()
