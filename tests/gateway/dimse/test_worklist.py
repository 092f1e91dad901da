"""Modality Worklist C-FIND SCP, fed by HL7 orders, against DCMTK findscu -W and a pynetdicom SCU."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind as MWL

from storage.index.worklist import COMPLETED, OrderRef, status_of
from storage.uids import is_valid_uid
from tests.conftest import storescu
from tests.factory import CITIZEN_ID, INSURANCE_NUMBER, Patient, ct_series, write_files
from tests.gateway.dimse.test_find import findscu
from tests.gateway.emr.hl7.client import ack_code, err, send
from tests.gateway.emr.hl7.messages import Order, Person, omi, orm

AN = Person(mrn="MRN-W1")  # Nguyễn^Văn An, with the factory's citizen ID and insurance number
HOA = Person(mrn="MRN-W2", family="Lê", given="Thị Hoa", birth="19900505", sex="F", citizen="001190000002", insurance="")
BINH = Person(mrn="MRN-W3", family="Trần", given="Văn Bình", citizen="", insurance="")
OMI_UID = "1.2.826.0.1.3680043.10.1337.77.1"
ORDERS = {
    "W-ACC1": orm("NW", AN, Order("PL-1", "W-ACC1", station="CT01", when="202612011030")),
    "W-ACC2": orm("NW", HOA, Order("PL-2", "W-ACC2", modality="MR", code="MR-BRAIN", description="MRI sọ não", when="202612021400")),
    "W-ACC3": omi("NW", BINH, Order("PL-3", "W-ACC3", modality="US", station="US01", when="20261203101500", study_uid=OMI_UID)),
    "W-ACC4": orm("NW", AN, Order("PL-4", "W-ACC4", station="CT01", when="202612050800")),
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    from tests.gateway_process import GatewayProcess

    env = {"PACSGW_DICOM_WORKLIST_AETS": "CT01,MR01,US01,PYSCU,FINDSCU", "PACSGW_HL7_STATION_AETS": "MR=MR01"}
    gw = GatewayProcess(tmp_path_factory.mktemp("mwl") / "gw", env)
    gw.start()
    acks = send(gw.hl7_port, *ORDERS.values())
    assert [ack_code(a) for a in acks] == ["AA"] * len(ORDERS)
    yield gw
    gw.kill()


def worklist(gateway, out: Path, *keys: str, calling: str = "FINDSCU") -> list[Dataset]:
    step = "ScheduledProcedureStepSequence[0]."
    returned = ("AccessionNumber", "PatientName", "PatientID", f"{step}Modality", f"{step}ScheduledStationAETitle")
    asked = {key.split("=")[0] for key in keys}
    found = findscu(gateway.dicom_port, out, *keys, *(k for k in returned if k not in asked), model="-W", calling=calling)
    return found


def accessions(found: list[Dataset]) -> list[str]:
    return [ds.AccessionNumber for ds in found]


@pytest.mark.parametrize(
    "keys, expected",
    [
        (("ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT01",), ["W-ACC1", "W-ACC4"]),
        (("ScheduledProcedureStepSequence[0].ScheduledStationAETitle=MR01",), ["W-ACC2"]),  # from hl7.station_aets
        (("ScheduledProcedureStepSequence[0].Modality=US",), ["W-ACC3"]),
        (("ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20261201-20261203",), ["W-ACC1", "W-ACC2", "W-ACC3"]),
        (("ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20261203",), ["W-ACC3"]),
        (
            ("ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20261201-20261203",
             "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime=1100-1200"),
            ["W-ACC2", "W-ACC3"],  # date and time ranges together: from 11:00 on the 1st to 12:00 on the 3rd
        ),  # fmt: skip
        (("PatientName=le thi hoa",), ["W-ACC2"]),  # no accents, no case
        (("PatientName=NGUYEN*",), ["W-ACC1", "W-ACC4"]),
        ((f"PatientID={CITIZEN_ID}",), ["W-ACC1", "W-ACC4"]),  # the patient's other IDs match too
        ((f"PatientID={INSURANCE_NUMBER}",), ["W-ACC1", "W-ACC4"]),
        (("AccessionNumber=W-ACC3",), ["W-ACC3"]),
        (("RequestedProcedureID=W-ACC2",), ["W-ACC2"]),
        ((f"StudyInstanceUID={OMI_UID}",), ["W-ACC3"]),
    ],
)
def test_findscu_matching(gateway, tmp_path: Path, keys: tuple[str, ...], expected: list[str]) -> None:
    found = worklist(gateway, tmp_path, *keys)
    assert accessions(found) == expected  # earliest first
    if "W-ACC2" in expected:
        hoa = found[accessions(found).index("W-ACC2")]
        assert str(hoa.PatientName) == "Lê^Thị Hoa" and hoa.SpecificCharacterSet == "ISO_IR 192"
        assert hoa.ScheduledProcedureStepSequence[0].Modality == "MR"


def _query(gateway, identifier: Dataset, calling: str = "PYSCU") -> list[tuple[int, Dataset | None]]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(MWL)
    assoc = ae.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    assert assoc.is_established
    try:
        return [(status.Status, ds) for status, ds in assoc.send_c_find(identifier, MWL)]
    finally:
        assoc.release()


def _standard_identifier(**matches: str) -> Dataset:
    ds = Dataset()
    for keyword in (
        "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
        "ReferringPhysicianName", "RequestedProcedureID", "RequestedProcedureDescription", "StudyInstanceUID",
    ):  # fmt: skip
        setattr(ds, keyword, matches.get(keyword, ""))
    ds.OtherPatientIDsSequence = Sequence([])
    ds.RequestedProcedureCodeSequence = Sequence([])
    ds.ScheduledProcedureStepSequence = Sequence([])  # empty: every attribute of the step
    return ds


def test_pynetdicom_scu_gets_the_standard_return_keys(gateway) -> None:
    responses = _query(gateway, _standard_identifier(AccessionNumber="W-ACC1"))
    assert [s for s, _ in responses] == [0xFF00, 0x0000]
    ds = responses[0][1]
    assert ds is not None
    assert (str(ds.PatientName), ds.PatientID, ds.IssuerOfPatientID) == ("Nguyễn^Văn An", "MRN-W1", "BV-CHORAY")
    assert (ds.PatientBirthDate, ds.PatientSex, str(ds.ReferringPhysicianName)) == ("19800101", "M", "Trần^Thị Bình")
    assert [(i.PatientID, i.IssuerOfPatientID) for i in ds.OtherPatientIDsSequence] == [(CITIZEN_ID, "CCCD"), (INSURANCE_NUMBER, "BHYT")]
    [code] = ds.RequestedProcedureCodeSequence
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == ("CT-CHEST", "L", "CT ngực")
    assert ds.RequestedProcedureID == "W-ACC1" and ds.RequestedProcedureDescription == "CT ngực"
    assert is_valid_uid(ds.StudyInstanceUID)
    [step] = ds.ScheduledProcedureStepSequence
    assert (step.Modality, step.ScheduledStationAETitle, step.ScheduledProcedureStepStartDate) == ("CT", "CT01", "20261201")
    assert (step.ScheduledProcedureStepStartTime, step.ScheduledProcedureStepID, step.ScheduledProcedureStepStatus) == (
        "103000", "W-ACC1", "SCHEDULED"
    )
    assert step.ScheduledProcedureStepDescription == "CT ngực" and step.ScheduledProtocolCodeSequence == []  # none sent
    # The same order sent again keeps its Study Instance UID; an OMI order brings its own.
    assert ack_code(send(gateway.hl7_port, ORDERS["W-ACC1"])[0]) == "AA"
    again = _query(gateway, _standard_identifier(AccessionNumber="W-ACC1"))[0][1]
    assert again is not None and again.StudyInstanceUID == ds.StudyInstanceUID
    omi_item = _query(gateway, _standard_identifier(AccessionNumber="W-ACC3"))[0][1]
    assert omi_item is not None and omi_item.StudyInstanceUID == OMI_UID
    assert omi_item.ScheduledProcedureStepSequence[0].ScheduledStationName == "CT ROOM 1"
    assert omi_item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription == "Protocol một"
    [protocol] = omi_item.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence  # IPC-6: the protocol to run
    assert (protocol.CodeValue, protocol.CodingSchemeDesignator, protocol.CodeMeaning) == ("P1", "L", "Protocol một")


def test_dcmtk_findscu_gets_the_scheduled_protocol(gateway, tmp_path: Path) -> None:
    code = "ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[0]"
    [ds] = worklist(gateway, tmp_path, "AccessionNumber=W-ACC3", f"{code}.CodeValue", f"{code}.CodeMeaning")
    [protocol] = ds.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence
    assert (protocol.CodeValue, protocol.CodeMeaning) == ("P1", "Protocol một")


def test_an_update_moves_the_step(gateway, tmp_path: Path) -> None:
    moved = orm("XO", None, Order("PL-2", "W-ACC2", modality="MR", code="MR-BRAIN", description="MRI sọ não", when="202612021630"))
    assert ack_code(send(gateway.hl7_port, moved)[0]) == "AA"  # no PID: the order's patient stays
    [ds] = worklist(gateway, tmp_path, "AccessionNumber=W-ACC2", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime")
    assert ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime == "163000" and ds.PatientID == "MRN-W2"


def test_a_cancelled_order_leaves_the_worklist(gateway, tmp_path: Path) -> None:
    assert accessions(worklist(gateway, tmp_path / "before", "AccessionNumber=W-ACC4")) == ["W-ACC4"]
    [ack] = send(gateway.hl7_port, orm("CA", AN, Order("PL-4", "W-ACC4")))
    assert ack_code(ack) == "AA"
    assert worklist(gateway, tmp_path / "after", "AccessionNumber=W-ACC4") == []
    [unknown] = send(gateway.hl7_port, orm("CA", AN, Order("PL-NONE", "W-NONE")))
    assert ack_code(unknown) == "AE" and err(unknown) == ("ORC^1^2", "204")


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_refusals(gateway) -> None:
    assert _query(gateway, _standard_identifier(), calling="STRANGER")[0][0] == 0x0124
    bad = _standard_identifier()
    step = Dataset()
    step.ScheduledProcedureStepStartDate = "2026-12-01"
    bad.ScheduledProcedureStepSequence = Sequence([step])
    assert _query(gateway, bad)[-1][0] == 0xA900
    bad.PatientBirthDate = "1980-01-02"  # the refusal is logged by key, never with the value
    assert _query(gateway, bad)[-1][0] == 0xA900
    assert "MWL C-FIND from PYSCU refused: invalid" in gateway.log_tail() and "1980-01-02" not in gateway.log_tail()


def test_cancel_stops_the_responses(gateway) -> None:
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(MWL)
    assoc = ae.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    statuses = []
    for status, _ in assoc.send_c_find(_standard_identifier(), MWL, msg_id=9):
        statuses.append(status.Status)
        if status.Status == 0xFF00:
            assoc.send_c_cancel(9, query_model=MWL)
    assoc.release()
    assert statuses[0] == 0xFF00 and statuses[-1] in (0xFE00, 0x0000)


def test_images_with_the_accession_complete_the_order(gateway, tmp_path: Path) -> None:
    order = Order("PL-5", "W-ACC5", station="CT01", when="202612061000")
    assert ack_code(send(gateway.hl7_port, orm("NW", AN, order))[0]) == "AA"
    assert accessions(worklist(gateway, tmp_path / "before", "AccessionNumber=W-ACC5")) == ["W-ACC5"]
    series = ct_series(2, patient=Patient(patient_id="MRN-W1"), accession="W-ACC5", size=16)
    assert storescu(gateway.dicom_port, write_files(series, tmp_path / "ct")).returncode == 0
    gateway.wait_idle()
    assert worklist(gateway, tmp_path / "after", "AccessionNumber=W-ACC5") == []
    index = gateway.open_index()
    try:
        with index.engine.connect() as conn:
            assert status_of(conn, OrderRef(placer="PL-5")) == [("W-ACC5", COMPLETED, series[0].StudyInstanceUID)]
    finally:
        index.close()


def test_bad_orders_are_refused_and_change_nothing(gateway, tmp_path: Path) -> None:
    status_changed = orm("SC", AN, Order("PL-6", "W-ACC6"))
    bad_uid = omi("NW", BINH, Order("PL-7", "W-ACC7", modality="US", study_uid="1.2.abc"))
    long_accession = orm("NW", AN, Order("PL-8", "W-ACCESSION-TOO-LONG"))
    without_ipc = omi("NW", BINH, Order("PL-9", "W-ACC9")).replace("\rIPC|", "\rNTE|")
    acks = send(gateway.hl7_port, status_changed, bad_uid, long_accession, without_ipc)
    assert [(ack_code(a), *err(a)) for a in acks] == [
        ("AE", "ORC^1^1", "103"), ("AE", "IPC^1^3", "102"), ("AE", "OBR^1^18", "102"), ("AE", "IPC", "100"),
    ]  # fmt: skip
    for accession in ("W-ACC6", "W-ACC7", "W-ACC9"):
        assert worklist(gateway, tmp_path / accession, f"AccessionNumber={accession}") == []
