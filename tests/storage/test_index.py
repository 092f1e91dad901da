"""The index behaves the same on SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import dataclasses

from storage.index.database import IndexDatabase
from storage.index.hierarchy import HierarchyQuery, Level
from tests.factory import CITIZEN_ID, Patient, ct_series, latin1_instance
from tests.storage.conftest import records


def uids(rows) -> list[str]:
    return [row["StudyInstanceUID"] for row in rows]


def studies(index: IndexDatabase, **matches: str) -> list[dict]:
    return index.search_hierarchy(HierarchyQuery(Level.STUDY, matches))


def test_counts_and_modalities_follow_ingest(index: IndexDatabase) -> None:
    ct = ct_series(3, size=16)
    mr = latin1_instance()
    mr.StudyInstanceUID = ct[0].StudyInstanceUID
    mr.PatientID = ct[0].PatientID
    index.commit(records(ct))
    index.commit(records([mr]))
    [row] = studies(index, StudyInstanceUID=ct[0].StudyInstanceUID)
    assert (row["NumberOfStudyRelatedSeries"], row["NumberOfStudyRelatedInstances"], row["ModalitiesInStudy"]) == (2, 4, "CT\\MR")


def test_recommit_is_idempotent_and_a_move_recounts_both_series(index: IndexDatabase) -> None:
    ct = ct_series(3, size=16)
    index.commit(records(ct))
    index.commit(records(ct))
    assert index.instance_count() == 3
    moved = dataclasses.replace(records(ct[:1])[0], series_uid="1.2.3.4.99", object_key="studies/x/series/y/instances/z.dcm")
    index.commit([moved])
    [row] = studies(index, StudyInstanceUID=ct[0].StudyInstanceUID)
    assert row["NumberOfStudyRelatedSeries"] == 2 and row["NumberOfStudyRelatedInstances"] == 3


def test_matching(index: IndexDatabase) -> None:
    a = ct_series(1, size=16, study_date="20240110", accession="A1")
    b = ct_series(1, size=16, study_date="20240220", accession="B2", patient=Patient(patient_id="MRN-2", name="Đặng^Thị Thu", citizen_id="001099000111"))
    c = [latin1_instance()]
    index.commit(records(a + b + c))
    A, B, C = a[0].StudyInstanceUID, b[0].StudyInstanceUID, c[0].StudyInstanceUID

    def find(**kw: str) -> list[str]:
        return uids(studies(index, **kw))

    assert find(PatientID="MRN-0001") == [A]
    assert find(PatientID=CITIZEN_ID) == [A]  # other identifiers of the same patient
    assert find(PatientID="001099000111") == [B]
    assert find(PatientID="MRN-*") == [B, A, C]  # newest first
    assert find(PatientName="dang thi thu") == [B]
    assert find(PatientName="ĐẶNG*") == [B]
    assert find(PatientName="*thu") == [B]
    assert find(PatientName="muller^jurgen") == [C]
    assert find(AccessionNumber="B2") == [B]
    assert find(StudyDate="20240101-20240131") == [A]
    assert find(StudyDate="20240201-") == [B]
    assert find(StudyDate="-20240115") == [A, C]
    assert sorted(find(StudyInstanceUID=f"{A}\\{C}")) == sorted([A, C])
    assert find(ModalitiesInStudy="MR") == [C]
    assert find(PatientID="MRN_0001") == []  # '_' is not a wildcard in DICOM


def test_paging_is_stable_and_counts_all(index: IndexDatabase) -> None:
    datasets = []
    for day in range(1, 13):
        datasets += ct_series(1, size=16, study_date=f"202403{day:02d}")
    index.commit(records(datasets))
    seen = []
    for offset in range(0, 12, 5):
        query = HierarchyQuery(Level.STUDY, {"PatientID": "MRN-0001"}, limit=5, offset=offset)
        rows = index.search_hierarchy(query)
        assert index.count_hierarchy(query) == 12
        seen += uids(rows)
    assert len(seen) == 12 == len(set(seen))


def test_an_index_of_an_earlier_release_gets_the_columns_and_indexes_added_since(index: IndexDatabase) -> None:
    from sqlalchemy import inspect

    from storage.index.schema import worklist_items
    from storage.index.schema_evolution import SchemaEvolutionError, add_missing

    with index.engine.begin() as conn:  # as an earlier release made it: no protocol code, no placer index
        conn.exec_driver_sql("DROP INDEX ix_worklist_placer")
        conn.exec_driver_sql("ALTER TABLE worklist_items DROP COLUMN protocol_code_meaning")
    reopened = IndexDatabase.open(str(index.engine.url.render_as_string(hide_password=False)))
    try:
        inspector = inspect(reopened.engine)
        assert "protocol_code_meaning" in {c["name"] for c in inspector.get_columns("worklist_items")}
        assert "ix_worklist_placer" in {i["name"] for i in inspector.get_indexes("worklist_items")}
        with reopened.engine.begin() as conn:
            assert add_missing(conn, worklist_items.metadata) == []  # nothing left to add
    finally:
        reopened.close()
    # A column that would leave existing rows invalid (not null, no empty default) is refused, never guessed.
    from sqlalchemy import Column, Integer, MetaData, Table

    later = MetaData()
    Table("worklist_items", later, Column("pk", Integer, primary_key=True), Column("priority", Integer, nullable=False))
    with index.engine.begin() as conn:
        try:
            add_missing(conn, later)
        except SchemaEvolutionError as refused:
            assert "worklist_items.priority" in str(refused)
        else:
            raise AssertionError("a column without a value for existing rows was added")
