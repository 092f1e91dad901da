"""Reports in the index: drafts, finalisation with its outbox message in one transaction, and the study's reading status."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy import func, select, text

from storage.index.database import IndexDatabase
from storage.index.hierarchy import HierarchyQuery, Level
from storage.index.matching import InvalidQuery
from storage.index.outbox import DIAGNOSTIC_REPORT, Outbox
from storage.index.reports import EmptyReport, NoReport, NoSuchStudy, ReportFinal, ReportStore, ReportStoreError
from storage.index.schema import outbox, reports
from tests.factory import ct_series
from tests.storage.conftest import records


def _study(index: IndexDatabase, **kw) -> str:
    datasets = ct_series(1, size=16, **kw)
    index.commit(records(datasets))
    return datasets[0].StudyInstanceUID


def _save(store: ReportStore, study: str, findings: str = "Không thấy bất thường.", impression: str = "Bình thường.", who: str = "dr.an"):
    return store.save_draft(study, findings=findings, impression=impression, template="CT sọ não", username=who, display_name="BS. An")


def _outbox_rows(index: IndexDatabase) -> list:
    with index.engine.connect() as conn:
        return conn.execute(select(outbox)).all()


def test_a_draft_needs_an_indexed_study_and_is_saved_over(index: IndexDatabase) -> None:
    store = ReportStore(index.engine)
    with pytest.raises(NoSuchStudy):
        _save(store, "1.2.3.4")
    study = _study(index)
    assert store.get(study) is None
    first = _save(store, study)
    assert (first.status, first.author_username, first.author_name, first.finalized_at) == ("draft", "dr.an", "BS. An", None)
    time.sleep(0.01)
    second = store.save_draft(study, findings="Sửa lại.", impression="", template="", username="dr.binh", display_name="")
    assert (second.findings, second.impression, second.template) == ("Sửa lại.", "", "")
    assert second.author_username == "dr.binh" and second.author_name == "dr.binh"  # no display name: the user name
    assert second.created_at == first.created_at and second.updated_at > first.updated_at
    assert second.updated_at.tzinfo is not None
    with index.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(reports)).scalar_one() == 1


def test_finalising_writes_exactly_one_outbox_message(index: IndexDatabase) -> None:
    store = ReportStore(index.engine)
    study = _study(index, accession="ACC-77")
    with pytest.raises(NoReport):
        store.finalize(study, username="dr.an", display_name="BS. An")
    _save(store, study)
    final = store.finalize(study, username="dr.chi", display_name="")
    assert final.status == "final" and final.finalized_by == "dr.chi" and final.finalized_by_name == "dr.chi"
    assert final.finalized_at is not None and abs(final.finalized_at - dt.datetime.now(dt.timezone.utc)).total_seconds() < 60
    with pytest.raises(ReportFinal):
        store.finalize(study, username="dr.chi", display_name="")
    with pytest.raises(ReportFinal):
        _save(store, study, findings="changed after signing")
    assert store.get(study).findings == "Không thấy bất thường."  # type: ignore[union-attr]
    [row] = _outbox_rows(index)
    assert (row.kind, row.subject, row.attempts, row.delivered_at, row.last_error) == (DIAGNOSTIC_REPORT, study, 0, None, "")
    [item] = Outbox(index.engine).due(DIAGNOSTIC_REPORT)
    assert item.payload == {
        "study_uid": study, "accession_number": "ACC-77", "patient_id": "MRN-0001", "issuer_of_patient_id": "BV-CHORAY",
        "study_date": "20240315", "study_description": "CT ngực", "modalities": ["CT"],
        "template": "CT sọ não", "findings": "Không thấy bất thường.", "impression": "Bình thường.",
        "finalized_at": final.finalized_at.isoformat(), "finalized_by": "dr.chi", "finalized_by_name": "dr.chi",
    }  # fmt: skip


def test_a_blank_report_is_not_signed(index: IndexDatabase) -> None:
    store = ReportStore(index.engine)
    study = _study(index)
    _save(store, study, findings="  \n", impression="\t")
    with pytest.raises(EmptyReport):
        store.finalize(study, username="dr.an", display_name="")
    assert store.get(study).status == "draft"  # type: ignore[union-attr]
    assert _outbox_rows(index) == []


def test_status_change_and_outbox_message_commit_together(index: IndexDatabase) -> None:
    store = ReportStore(index.engine)
    study = _study(index)
    _save(store, study)
    with index.engine.begin() as conn:
        conn.execute(text("DROP TABLE outbox"))  # the message cannot be written...
    with pytest.raises(ReportStoreError):
        store.finalize(study, username="dr.an", display_name="")
    assert store.get(study).status == "draft"  # ...so the report is not final either  # type: ignore[union-attr]


def test_outbox_consumer_marks_delivery_and_failure(index: IndexDatabase) -> None:
    store, box = ReportStore(index.engine), Outbox(index.engine)
    first, second = _study(index), _study(index)
    for study in (first, second):
        _save(store, study)
        store.finalize(study, username="dr.an", display_name="")
    items = box.due(DIAGNOSTIC_REPORT)
    assert [i.subject for i in items] == [first, second]
    box.delivered(items[0].pk)
    box.failed(items[1].pk, "EMR unreachable", retry_at=dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5))
    assert box.due(DIAGNOSTIC_REPORT) == []
    [later] = box.due(DIAGNOSTIC_REPORT, now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=6))
    assert (later.subject, later.attempts, later.last_error) == (second, 1, "EMR unreachable")
    assert box.due("something-else", now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)) == []


def test_study_status_follows_the_report(index: IndexDatabase) -> None:
    store = ReportStore(index.engine)
    unread, drafted, read = _study(index), _study(index), _study(index)
    _save(store, drafted)
    _save(store, read)
    store.finalize(read, username="dr.an", display_name="")

    def statuses(level: Level = Level.STUDY, **matches: str) -> dict[str, str]:
        rows = index.search_hierarchy(HierarchyQuery(level, matches))
        return {row["StudyInstanceUID"]: row["StudyStatusID"] for row in rows}

    assert statuses() == {unread: "UNREAD", drafted: "IN PROGRESS", read: "READ"}
    assert statuses(StudyStatusID="READ") == {read: "READ"}
    assert statuses(StudyStatusID="UNREAD\\IN PROGRESS") == {unread: "UNREAD", drafted: "IN PROGRESS"}
    assert statuses(Level.SERIES, StudyStatusID="IN PROGRESS") == {drafted: "IN PROGRESS"}
    assert index.count_hierarchy(HierarchyQuery(Level.IMAGE, {"StudyStatusID": "UNREAD"})) == 1
    with pytest.raises(InvalidQuery, match="not one of UNREAD, IN PROGRESS, READ"):
        statuses(StudyStatusID="DONE")
