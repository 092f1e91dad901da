"""Patients from the EMR in the index: found never duplicated, demographics kept over ingest, merged (ADT^A40)."""

from __future__ import annotations

import json
import zlib

import pytest
from sqlalchemy import select

from storage.index.accounts import AccountStore, PatientLink, Role
from storage.index.database import IndexDatabase
from storage.index.hierarchy import HierarchyQuery, Level
from storage.index.patients import (
    CITIZEN_ID_ISSUER,
    Demographics,
    PatientConflict,
    find_patient,
    merge_patients,
    record_demographics,
)
from storage.index.reconciliation import ReconciliationQueue
from storage.index.records import OtherPatientID
from storage.index.schema import instance_metadata, patients
from storage.index.times import utc_now
from tests.factory import CITIZEN_ID, Patient, ct_series
from tests.storage.conftest import records

CITIZEN = OtherPatientID(CITIZEN_ID, CITIZEN_ID_ISSUER, "TEXT")


def emr(index: IndexDatabase, demographics: Demographics) -> int:
    with index.engine.begin() as conn:
        return record_demographics(conn, demographics, utc_now())


def patient_rows(index: IndexDatabase) -> list[tuple[str, str, str, str, str]]:
    with index.engine.connect() as conn:
        rows = conn.execute(select(patients.c.patient_id, patients.c.issuer, patients.c.patient_name, patients.c.birth_date, patients.c.sex).order_by(patients.c.pk))
        return [tuple(r) for r in rows]


def test_found_by_mrn_then_by_citizen_id_never_duplicated(index: IndexDatabase) -> None:
    index.commit(records(ct_series(1, size=16)))  # MRN-0001 / BV-CHORAY with the factory's citizen ID, from a modality
    pk = emr(index, Demographics("MRN-0001", "BV-CHORAY", "Nguyễn^Văn An", "19800101", "M"))
    assert emr(index, Demographics("MRN-X", "BV-KHAC", "Nguyễn^Văn An", other_ids=(CITIZEN,))) == pk  # by citizen ID
    assert emr(index, Demographics("MRN-X", "BV-KHAC", None)) == pk  # now by that MRN, kept as another ID
    assert [r[0] for r in patient_rows(index)] == ["MRN-0001"]
    studies = index.search_hierarchy(HierarchyQuery(Level.STUDY, {"PatientID": "MRN-X"}))
    assert len(studies) == 1  # a query by the EMR's other MRN finds the patient's studies


def test_none_keeps_an_empty_string_clears(index: IndexDatabase) -> None:
    emr(index, Demographics("MRN-K", "", "Lê^Thị Hoa", "19900505", "F"))
    emr(index, Demographics("MRN-K", "", None, None, ""))
    assert patient_rows(index) == [("MRN-K", "", "Lê^Thị Hoa", "19900505", "")]


def test_an_id_naming_two_patients_is_a_conflict_that_changes_nothing(index: IndexDatabase) -> None:
    index.commit(records(ct_series(1, size=16)) + records(ct_series(1, size=16, patient=Patient(patient_id="MRN-OTHER"))))
    before = patient_rows(index)
    with pytest.raises(PatientConflict):
        emr(index, Demographics("MRN-NEW", "", "Ai^Đó", other_ids=(CITIZEN,)))  # both rows carry the citizen ID
    assert patient_rows(index) == before


def test_ingest_keeps_the_emr_spelling(index: IndexDatabase) -> None:
    emr(index, Demographics("MRN-0001", "BV-CHORAY", "Nguyễn^Văn An", "19800101", "M"))
    index.commit(records(ct_series(1, size=16, patient=Patient(name="NGUYEN^VAN AN", birth_date="19800202"))))
    assert patient_rows(index) == [("MRN-0001", "BV-CHORAY", "Nguyễn^Văn An", "19800101", "M")]
    assert _metadata_ids(index) == {("MRN-0001", "Nguyễn^Văn An")}  # WADO-RS metadata of the new instance too
    index.commit(records(ct_series(1, size=16, patient=Patient(patient_id="MRN-MOD", name="TRAN^BINH"))))
    assert patient_rows(index)[-1][:3] == ("MRN-MOD", "BV-CHORAY", "TRAN^BINH")  # not the EMR's: the modality's


def _metadata_ids(index: IndexDatabase) -> set[tuple[str, str]]:
    with index.engine.connect() as conn:
        docs = [json.loads(zlib.decompress(d)) for (d,) in conn.execute(select(instance_metadata.c.document))]
    return {(d["00100020"]["Value"][0], d["00100010"]["Value"][0]["Alphabetic"]) for d in docs}


def test_merge_moves_studies_ids_links_and_metadata(index: IndexDatabase) -> None:
    merged_series = ct_series(2, size=16, patient=Patient(patient_id="MRN-DUP", name="HOANG^NAM", insurance_number="BH-DUP"))
    index.commit(records(merged_series))
    accounts = AccountStore(index.engine)
    accounts.add_user("dr", Role("referring"))
    accounts.link_patient("dr", "MRN-DUP")
    with index.engine.begin() as conn:
        survivor = record_demographics(conn, Demographics("MRN-KEEP", "BV-CHORAY", "Hoàng^Văn Nam"), utc_now())
        merged = find_patient(conn, "MRN-DUP", "BV-CHORAY")
        assert merged is not None
        outcome = merge_patients(conn, survivor, merged, utc_now())
    assert (outcome.studies, outcome.instances) == (1, 2)
    assert [r[0] for r in patient_rows(index)] == ["MRN-KEEP"]
    for patient_id in ("MRN-KEEP", "MRN-DUP", CITIZEN_ID, "BH-DUP"):
        [study] = index.search_hierarchy(HierarchyQuery(Level.STUDY, {"PatientID": patient_id}))
        assert study["StudyInstanceUID"] == merged_series[0].StudyInstanceUID and study["PatientID"] == "MRN-KEEP"
    assert _metadata_ids(index) == {("MRN-KEEP", "Hoàng^Văn Nam")}
    assert accounts.links(accounts.user("dr"))[0] == [PatientLink("MRN-KEEP", "BV-CHORAY")]


def test_a_late_instance_with_a_merged_mrn_joins_the_survivor(index: IndexDatabase) -> None:
    index.commit(records(ct_series(1, size=16, patient=Patient(patient_id="MRN-OLD", name="PHAM^LAN"))))
    with index.engine.begin() as conn:
        survivor = record_demographics(conn, Demographics("MRN-NEW", "BV-CHORAY", "Phạm^Thị Lan"), utc_now())
        merged = find_patient(conn, "MRN-OLD", "BV-CHORAY")
        assert merged is not None
        queued = ReconciliationQueue(index.engine)
    item = queued.open("1.2.3.4", patient_pk=merged, reason="no EMR patient", tried=[])
    with index.engine.begin() as conn:
        merge_patients(conn, survivor, merged, utc_now())
    assert queued.get(item).patient_pk == survivor  # the queue follows the merge
    late = ct_series(1, size=16, patient=Patient(patient_id="MRN-OLD", name="PHAM^LAN"))  # the modality had the old MRN
    index.commit(records(late))
    assert [r[0] for r in patient_rows(index)] == ["MRN-NEW"]
    studies = index.search_hierarchy(HierarchyQuery(Level.STUDY, {"PatientID": "MRN-NEW"}))
    assert late[0].StudyInstanceUID in {s["StudyInstanceUID"] for s in studies} and len(studies) == 2
    assert _metadata_ids(index) == {("MRN-NEW", "Phạm^Thị Lan")}


def test_an_id_without_issuer_never_joins_another_patient(index: IndexDatabase) -> None:
    emr(index, Demographics("MRN-0001", "BV-CHORAY", "Nguyễn^Văn An", other_ids=(OtherPatientID("LOCAL-7", "", "TEXT"),)))
    series = ct_series(1, size=16, patient=Patient(patient_id="LOCAL-7", name="NGUYEN^AN"))
    for ds in series:
        ds.IssuerOfPatientID = ""
    index.commit(records(series))
    assert sorted(r[0] for r in patient_rows(index)) == ["LOCAL-7", "MRN-0001"]


def test_a_known_patients_new_ids_are_added_whatever_its_ids_hold(index: IndexDatabase) -> None:
    """A known patient's IDs come with it, so those it has are not upserted again; a new one still is, even
    when a stored ID holds the separators that list is made with."""
    from storage.index.schema import patient_identifiers

    odd = OtherPatientID("A\x1fB\x1eC", "ODD", "TEXT")
    pk = emr(index, Demographics("MRN-IDS", "HOSP", name="Le^An", other_ids=(CITIZEN, odd)))
    insurance = OtherPatientID("DN4700000000001", "BHYT", "TEXT")
    assert emr(index, Demographics("MRN-IDS", "HOSP", name="Le^Anh", other_ids=(CITIZEN, odd, insurance))) == pk
    again = OtherPatientID("DN4700000000002", "BHYT", "TEXT")
    assert emr(index, Demographics("MRN-IDS", "HOSP", other_ids=(again,))) == pk
    with index.engine.connect() as conn:
        ids = conn.execute(select(patient_identifiers.c.identifier, patient_identifiers.c.issuer)
                           .where(patient_identifiers.c.patient_pk == pk)).all()
    assert sorted(ids) == sorted([(CITIZEN_ID, CITIZEN_ID_ISSUER), (odd.patient_id, "ODD"), (insurance.patient_id, "BHYT"),
                                  (again.patient_id, "BHYT")])
    assert patient_rows(index)[-1][2] == "Le^Anh"
