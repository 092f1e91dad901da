"""The worklist in the index: orders scheduled, changed, cancelled, completed by ingest, and searched (MWL)."""

from __future__ import annotations

import pytest

from storage.index.database import IndexDatabase
from storage.index.matching import InvalidQuery
from storage.index.patients import Demographics, record_demographics
from storage.index.records import OtherPatientID
from storage.index.times import utc_now
from storage.index.worklist import (
    CANCELLED,
    COMPLETED,
    SCHEDULED,
    OrderRef,
    ScheduledStep,
    UnknownOrder,
    WorklistQuery,
    cancel,
    schedule,
    search,
    status_of,
    validate,
)
from storage.uids import is_valid_uid
from tests.factory import Patient, ct_series
from tests.storage.conftest import records


def step(accession: str, date: str = "20261201", time: str = "103000", **values: str) -> ScheduledStep:
    return ScheduledStep(
        sps_id=values.pop("sps_id", accession), accession_number=accession, requested_procedure_id=accession,
        scheduled_date=date, scheduled_time=time, modality=values.pop("modality", "CT"), **values,
    )  # fmt: skip


def order(index: IndexDatabase, ref: OrderRef, *steps: ScheduledStep, patient: Demographics | None = None) -> list[str]:
    patient = patient or Demographics("MRN-0001", "BV-CHORAY", "Nguyễn^Văn An", other_ids=(OtherPatientID("079203001234", "CCCD"),))
    with index.engine.begin() as conn:
        return schedule(conn, ref, record_demographics(conn, patient, utc_now()), steps, utc_now())


def find(index: IndexDatabase, **matches: str) -> list[str]:
    with index.engine.connect() as conn:
        return [row["accession_number"] for row in search(conn, WorklistQuery(matches))]


def statuses(index: IndexDatabase, ref: OrderRef) -> list[tuple[str, str, str]]:
    with index.engine.connect() as conn:
        return status_of(conn, ref)


def test_schedule_update_cancel(index: IndexDatabase) -> None:
    [uid] = order(index, OrderRef(placer="P1"), step("A1"))
    assert is_valid_uid(uid)
    # Known by its placer number: a message naming also the filler number updates the same order.
    assert order(index, OrderRef(placer="P1", filler="F1"), step("A1", time="150000")) == [uid]
    with index.engine.connect() as conn:
        [row] = search(conn, WorklistQuery({"AccessionNumber": "A1"}))
    assert (row["scheduled_time"], row["filler_order_number"], row["PatientName"]) == ("150000", "F1", "Nguyễn^Văn An")
    assert row["other_ids"] == [("079203001234", "CCCD", "")]
    with index.engine.begin() as conn:
        assert cancel(conn, OrderRef(filler="F1"), utc_now()) == 1  # found by the filler number alone
    assert statuses(index, OrderRef(placer="P1")) == [("A1", CANCELLED, "")] and find(index) == []
    with index.engine.begin() as conn, pytest.raises(UnknownOrder):
        cancel(conn, OrderRef(placer="NOPE"), utc_now())
    assert order(index, OrderRef(placer="P1"), step("A1")) == [uid]  # sent again after a cancellation: on again
    assert find(index) == ["A1"]


def test_steps_of_one_order_share_a_study_uid_made_once(index: IndexDatabase) -> None:
    uids = order(index, OrderRef(placer="P2"), step("A2", sps_id="S1"), step("A2", sps_id="S2"))
    assert len(set(uids)) == 1
    given = order(index, OrderRef(placer="P3"), step("A3", study_uid="1.2.3.4"))
    assert given == ["1.2.3.4"]


def test_matching(index: IndexDatabase) -> None:
    order(index, OrderRef(placer="P1"), step("A1", "20261201", "083000", station_aet="CT01"))
    order(index, OrderRef(placer="P2"), step("A2", "20261202", "140000", modality="MR", station_aet="MR01"))
    lan = Demographics("MRN-2", "", "Đặng^Thị Lan")
    order(index, OrderRef(placer="P3"), step("A3", "20261203", "090000", modality="US"), patient=lan)
    assert find(index) == ["A1", "A2", "A3"]
    assert find(index, ScheduledStationAETitle="CT01") == ["A1"]
    assert find(index, ScheduledStationAETitle="*01") == ["A1", "A2"]
    assert find(index, Modality="US") == ["A3"]
    assert find(index, ScheduledProcedureStepStartDate="20261202-") == ["A2", "A3"]
    assert find(index, ScheduledProcedureStepStartDate="20261201", ScheduledProcedureStepStartTime="0800-0900") == ["A1"]
    both = {"ScheduledProcedureStepStartDate": "20261201-20261203", "ScheduledProcedureStepStartTime": "0900-1000"}
    assert find(index, **both) == ["A2", "A3"]  # from 09:00 on the 1st to 10:00 on the 3rd
    assert find(index, PatientName="dang thi lan") == ["A3"]
    assert find(index, PatientID="079203001234") == ["A1", "A2"]
    with pytest.raises(InvalidQuery):
        validate(WorklistQuery({"ScheduledProcedureStepStartTime": "8h-9h", "ScheduledProcedureStepStartDate": "20261201-"}))


def test_indexing_images_with_the_accession_completes_the_order(index: IndexDatabase) -> None:
    [uid] = order(index, OrderRef(placer="P1"), step("ACC-DONE"))
    order(index, OrderRef(placer="P2"), step("ACC-OTHER"))
    series = ct_series(1, size=16, accession="ACC-DONE", patient=Patient())
    index.commit(records(series))
    assert statuses(index, OrderRef(placer="P1")) == [("ACC-DONE", COMPLETED, series[0].StudyInstanceUID)]
    assert statuses(index, OrderRef(placer="P2")) == [("ACC-OTHER", SCHEDULED, "")]
    # A study sent with the worklist's Study Instance UID but without the accession completes its order too.
    [pre] = order(index, OrderRef(placer="P4"), step("ACC-UID"))
    by_uid = ct_series(1, size=16, accession="", study_uid=pre)
    index.commit(records(by_uid))
    assert statuses(index, OrderRef(placer="P4")) == [("ACC-UID", COMPLETED, pre)]
    assert uid != pre


def test_another_patients_images_with_the_accession_leave_the_order_on_the_worklist(index: IndexDatabase) -> None:
    order(index, OrderRef(placer="P5"), step("ACC-MINE"))
    typo = ct_series(1, size=16, accession="ACC-MINE", patient=Patient(patient_id="MRN-SOMEONE", citizen_id="", insurance_number=""))
    index.commit(records(typo))
    assert statuses(index, OrderRef(placer="P5")) == [("ACC-MINE", SCHEDULED, "")]
    mine = ct_series(1, size=16, accession="ACC-MINE", patient=Patient())
    for ds in mine:
        ds.IssuerOfPatientID = ""  # the modality sent no issuer: still the order's patient
    index.commit(records(mine))
    assert statuses(index, OrderRef(placer="P5")) == [("ACC-MINE", COMPLETED, mine[0].StudyInstanceUID)]


def test_images_complete_a_step_a_modality_started(index: IndexDatabase) -> None:
    from storage.index.performed_steps import PerformedSteps, StepRef
    from storage.index.worklist import IN_PROGRESS

    order(index, OrderRef(placer="P6"), step("ACC-PPS"))
    assert PerformedSteps(index.engine).create("1.2.3.6", [StepRef(accession_number="ACC-PPS")], calling_ae="CT01") == 1
    assert statuses(index, OrderRef(placer="P6")) == [("ACC-PPS", IN_PROGRESS, "")]
    assert find(index, AccessionNumber="ACC-PPS") == []  # off the worklist while the modality works
    series = ct_series(1, size=16, accession="ACC-PPS", patient=Patient())
    index.commit(records(series))  # the modality never sends its N-SET COMPLETED: the images say it
    assert statuses(index, OrderRef(placer="P6")) == [("ACC-PPS", COMPLETED, series[0].StudyInstanceUID)]


def test_a_step_under_way_stays_with_its_modality_until_done_or_cancelled(index: IndexDatabase) -> None:
    from storage.index.performed_steps import DISCONTINUED, PerformedSteps, StepRef
    from storage.index.worklist import IN_PROGRESS

    steps = PerformedSteps(index.engine)
    order(index, OrderRef(placer="P7"), step("ACC-P7"))
    steps.create("1.2.3.7", [StepRef(accession_number="ACC-P7")], calling_ae="CT01")
    order(index, OrderRef(placer="P7"), step("ACC-P7", time="110000"))  # the RIS changes the order (XO)
    assert statuses(index, OrderRef(placer="P7")) == [("ACC-P7", IN_PROGRESS, "")]  # not back on the worklist
    with index.engine.begin() as conn:
        assert cancel(conn, OrderRef(placer="P7"), utc_now()) == 1  # the RIS cancels it under way
    assert steps.update("1.2.3.7", DISCONTINUED) == 0  # the modality gives up: it does not come back
    assert statuses(index, OrderRef(placer="P7")) == [("ACC-P7", CANCELLED, "")]
