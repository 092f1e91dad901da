"""The reconciliation queue: one open item per study, no identifier in clear, resolving links the study by hand
and makes its waiting messages due; a later automatic match closes it too."""

from __future__ import annotations

import datetime as dt

import pytest

from storage.index.database import IndexDatabase
from storage.index.fhir_links import MANUAL, FhirLinks
from storage.index.outbox import DIAGNOSTIC_REPORT, IMAGING_STUDY, Outbox, enqueue
from storage.index.reconciliation import AlreadyResolved, NoSuchItem, ReconciliationQueue

TRIED = [{"identifier": "mrn", "system": "urn:oid:1.2.3", "matches": 0}]


def test_open_resolve_and_match(index: IndexDatabase) -> None:
    queue = ReconciliationQueue(index.engine)
    outbox = Outbox(index.engine)
    with index.engine.begin() as conn:
        study_msg = enqueue(conn, IMAGING_STUDY, "1.2.7", {})
        report_msg = enqueue(conn, DIAGNOSTIC_REPORT, "1.2.7", {})
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    for pk in (study_msg, report_msg):
        outbox.failed(pk, "waiting for reconciliation", retry_at=later)

    pk = queue.open("1.2.7", patient_pk=4, reason="no EMR patient carries the study's MRN", tried=TRIED)
    assert queue.open("1.2.7", patient_pk=4, reason="still nobody", tried=TRIED) == pk  # one open item per study
    assert queue.open_count() == 1
    [item] = queue.listing("open")
    assert (item.pk, item.study_uid, item.patient_pk, item.reason, item.tried) == (pk, "1.2.7", 4, "still nobody", TRIED)
    assert item.to_json()["patient"] is None and item.to_json()["resolved_at"] is None
    assert queue.listing("resolved") == []

    resolved = queue.resolve(pk, patient_ref="Patient/abc", by="admin")
    assert (resolved.resolved_by, resolved.patient_ref) == ("admin", "Patient/abc") and resolved.resolved_at
    link = FhirLinks(index.engine).get("1.2.7")
    assert (link.patient_ref, link.link_source) == ("Patient/abc", MANUAL)
    assert {i.pk for i in outbox.due_any([IMAGING_STUDY, DIAGNOSTIC_REPORT])} == {study_msg, report_msg}
    with pytest.raises(AlreadyResolved):
        queue.resolve(pk, patient_ref="Patient/other", by="admin")
    with pytest.raises(NoSuchItem):
        queue.resolve(999_999, patient_ref="Patient/abc", by="admin")
    assert queue.open_count() == 0 and [i.pk for i in queue.listing(None)] == [pk]

    again = queue.open("1.2.8", patient_pk=None, reason="several EMR patients carry the study's citizen ID", tried=[])
    assert again != pk
    assert queue.matched("1.2.8", "Patient/xyz") == 1
    closed = queue.get(again)
    assert (closed.resolved_by, closed.patient_ref) == ("emr-link", "Patient/xyz")
    assert queue.matched("1.2.8", "Patient/xyz") == 0
