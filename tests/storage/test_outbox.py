"""The outbox as the EMR link uses it: due messages of several kinds, delivery that notices a changed payload,
listing by state without payloads, retries on demand, the backlog, and per-destination acceptances."""

from __future__ import annotations

import datetime as dt

from storage.index.database import IndexDatabase
from storage.index.outbox import DIAGNOSTIC_REPORT, IMAGING_STUDY, Outbox, enqueue, refresh_pending


def _queue(index: IndexDatabase, kind: str, subject: str, payload: dict) -> int:
    with index.engine.begin() as conn:
        return enqueue(conn, kind, subject, payload)


def test_due_messages_of_several_kinds_oldest_first(index: IndexDatabase) -> None:
    outbox = Outbox(index.engine)
    first = _queue(index, IMAGING_STUDY, "1.2.1", {"n": 1})
    second = _queue(index, DIAGNOSTIC_REPORT, "1.2.1", {"findings": "Phổi sáng."})
    _queue(index, "other-kind", "1.2.2", {})
    assert [i.pk for i in outbox.due_any([IMAGING_STUDY, DIAGNOSTIC_REPORT])] == [first, second]
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    outbox.failed(first, "FHIR PUT ImagingStudy: HTTP 503", retry_at=later)
    assert [i.pk for i in outbox.due_any([IMAGING_STUDY, DIAGNOSTIC_REPORT])] == [second]
    assert [i.pk for i in outbox.due_any([IMAGING_STUDY], now=later)] == [first]
    assert outbox.due_any([IMAGING_STUDY], now=later)[0].payload_json == '{"n": 1}'


def test_a_retry_asked_for_during_a_failing_attempt_is_kept(index: IndexDatabase) -> None:
    outbox = Outbox(index.engine)
    pk = _queue(index, DIAGNOSTIC_REPORT, "1.2.9", {"findings": "x"})
    started = dt.datetime.now(dt.timezone.utc)
    [item] = outbox.due_any([DIAGNOSTIC_REPORT])
    assert outbox.make_due(pk=item.pk) == 1  # an administrator: "retry now", while the attempt runs
    later = started + dt.timedelta(hours=1)
    outbox.failed(pk, "fhir: waiting for reconciliation #1", retry_at=later, attempted_at=started)
    assert [i.pk for i in outbox.due_any([DIAGNOSTIC_REPORT])] == [pk]  # still due now, not in an hour
    outbox.failed(pk, "fhir: HTTP 503", retry_at=later, attempted_at=dt.datetime.now(dt.timezone.utc))
    assert outbox.due_any([DIAGNOSTIC_REPORT]) == []  # an ordinary failure waits


def test_delivery_is_not_recorded_when_the_payload_changed_meanwhile(index: IndexDatabase) -> None:
    outbox = Outbox(index.engine)
    pk = _queue(index, IMAGING_STUDY, "1.2.3", {"study_updated_at": "a"})
    [taken] = outbox.due_any([IMAGING_STUDY])
    with index.engine.begin() as conn:  # more instances arrived while it was being delivered
        assert refresh_pending(conn, IMAGING_STUDY, "1.2.3", {"study_updated_at": "b"}) == pk
    assert outbox.delivered(pk, payload_json=taken.payload_json) is False
    [again] = outbox.due_any([IMAGING_STUDY])
    assert again.payload == {"study_updated_at": "b"}
    assert outbox.delivered(pk, payload_json=again.payload_json) is True
    assert outbox.due_any([IMAGING_STUDY]) == []
    assert outbox.delivered(pk) is False  # once
    with index.engine.begin() as conn:
        assert refresh_pending(conn, IMAGING_STUDY, "1.2.3", {}) is None  # nothing waiting: a new message is needed


def test_listing_by_state_retry_and_backlog(index: IndexDatabase) -> None:
    outbox = Outbox(index.engine)
    pending = _queue(index, DIAGNOSTIC_REPORT, "1.2.4", {"patient_id": "MRN-SECRET", "findings": "Gan to."})
    failed = _queue(index, IMAGING_STUDY, "1.2.4", {})
    delivered = _queue(index, IMAGING_STUDY, "1.2.5", {})
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    outbox.failed(failed, "FHIR search Patient: HTTP 500", retry_at=later)
    outbox.delivered(delivered)
    assert [r["id"] for r in outbox.listing()] == [delivered, failed, pending]
    assert [r["id"] for r in outbox.listing("pending")] == [pending]
    assert [r["id"] for r in outbox.listing("delivered")] == [delivered]
    [row] = outbox.listing("failed")
    assert set(row) == {"id", "kind", "subject", "attempts", "last_error", "created_at", "next_attempt_at", "delivered_at"}
    assert (row["attempts"], row["last_error"], row["delivered_at"]) == (1, "FHIR search Patient: HTTP 500", None)
    assert "MRN-SECRET" not in str(outbox.listing())
    assert dt.datetime.fromisoformat(row["next_attempt_at"]) > dt.datetime.now(dt.timezone.utc)

    count, oldest = outbox.backlog([IMAGING_STUDY, DIAGNOSTIC_REPORT])
    assert count == 2 and oldest is not None and oldest <= dt.datetime.now(dt.timezone.utc)
    assert outbox.backlog(["nothing"]) == (0, None)

    assert outbox.make_due(pk=failed) == 1
    assert outbox.row(failed)["next_attempt_at"] <= dt.datetime.now(dt.timezone.utc).isoformat()
    assert outbox.make_due(pk=delivered) == 0 and outbox.make_due(pk=999_999) == 0
    assert outbox.make_due(subject="1.2.4") == 2
    assert outbox.row(999_999) is None


def test_acceptances_per_destination(index: IndexDatabase) -> None:
    outbox = Outbox(index.engine)
    pk = _queue(index, DIAGNOSTIC_REPORT, "1.2.6", {})
    assert outbox.acceptances(pk) == set()
    outbox.accepted(pk, "fhir")
    outbox.accepted(pk, "fhir")  # again: no error
    assert outbox.acceptances(pk) == {"fhir"}
    outbox.accepted(pk, "hl7")
    assert outbox.acceptances(pk) == {"fhir", "hl7"}
