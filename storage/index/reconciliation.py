"""The reconciliation queue: studies whose patient the EMR link could not tell, for an administrator.

A study goes here when no EMR Patient, or several, carry its patient's
identifiers, or when its identity cannot be read (de-identified without a
vault). Rows hold no identifier in clear: the study UID, the index's patient
key, the reason, and what was tried as (identifier kind, system, matches).
Resolving a row names the Patient: it becomes the study's manual link and the
study's waiting outbox messages are due at once, in one transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select, update

from storage.index.fhir_links import MANUAL, upsert_link
from storage.index.schema import outbox, reconciliation_queue
from storage.index.times import as_utc, utc_now

q = reconciliation_queue


class ReconciliationError(Exception):
    pass


class NoSuchItem(ReconciliationError):
    pass


class AlreadyResolved(ReconciliationError):
    pass


@dataclass(frozen=True)
class ReconciliationItem:
    pk: int
    study_uid: str
    patient_pk: int | None
    reason: str
    tried: list[dict[str, Any]]
    created_at: dt.datetime
    updated_at: dt.datetime
    resolved_at: dt.datetime | None
    resolved_by: str
    patient_ref: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.pk, "study_uid": self.study_uid, "patient_pk": self.patient_pk, "reason": self.reason,
            "tried": self.tried, "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "resolved_by": self.resolved_by or None, "patient": self.patient_ref or None,
        }  # fmt: skip


def _item(row: Any) -> ReconciliationItem:
    return ReconciliationItem(
        row.pk, row.study_uid, row.patient_pk, row.reason, json.loads(row.tried or "[]"),
        as_utc(row.created_at), as_utc(row.updated_at), as_utc(row.resolved_at),
        row.resolved_by, row.patient_ref,
    )  # fmt: skip


class ReconciliationQueue:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def open(self, study_uid: str, *, patient_pk: int | None, reason: str, tried: list[dict[str, Any]]) -> int:
        """Queue the study (or update its open row: one per study); the row's pk."""
        now = utc_now()
        values = {"patient_pk": patient_pk, "reason": reason[:256], "tried": json.dumps(tried), "updated_at": now}
        with self.engine.begin() as conn:
            pk = conn.execute(
                select(q.c.pk).where(q.c.study_uid == study_uid, q.c.resolved_at.is_(None)).order_by(q.c.pk).limit(1)
            ).scalar()
            if pk is not None:
                conn.execute(update(q).where(q.c.pk == pk).values(**values))
                return int(pk)
            return int(conn.execute(q.insert().values(study_uid=study_uid, created_at=now, **values).returning(q.c.pk)).scalar_one())

    def get(self, pk: int) -> ReconciliationItem | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(q).where(q.c.pk == pk)).first()
        return None if row is None else _item(row)

    def listing(self, state: str | None = "open", *, limit: int = 100, offset: int = 0) -> list[ReconciliationItem]:
        """Newest first; ``state`` 'open', 'resolved' or None for both."""
        stmt = select(q).order_by(q.c.pk.desc()).limit(limit).offset(offset)
        if state == "open":
            stmt = stmt.where(q.c.resolved_at.is_(None))
        elif state == "resolved":
            stmt = stmt.where(q.c.resolved_at.is_not(None))
        with self.engine.connect() as conn:
            return [_item(r) for r in conn.execute(stmt)]

    def open_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(q).where(q.c.resolved_at.is_(None))).scalar_one())

    def resolve(self, pk: int, *, patient_ref: str, by: str) -> ReconciliationItem:
        """Link the study to ``patient_ref`` by hand and have its waiting messages sent; raises NoSuchItem, AlreadyResolved."""
        now = utc_now()
        with self.engine.begin() as conn:
            done = conn.execute(
                update(q).where(q.c.pk == pk, q.c.resolved_at.is_(None))
                .values(resolved_at=now, resolved_by=by[:64], patient_ref=patient_ref, updated_at=now)
            )  # fmt: skip
            row = conn.execute(select(q).where(q.c.pk == pk)).first()
            if row is None:
                raise NoSuchItem(f"no reconciliation item {pk}")
            if not done.rowcount:
                raise AlreadyResolved(f"reconciliation item {pk} is resolved already")
            upsert_link(conn, row.study_uid, patient_ref=patient_ref, link_source=MANUAL)
            conn.execute(
                update(outbox)
                .where(outbox.c.subject == row.study_uid, outbox.c.delivered_at.is_(None))
                .values(next_attempt_at=now)
            )
            return _item(row)

    def matched(self, study_uid: str, patient_ref: str) -> int:
        """Close the study's open rows: its patient was found after all (registered in the EMR meanwhile)."""
        now = utc_now()
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    update(q).where(q.c.study_uid == study_uid, q.c.resolved_at.is_(None))
                    .values(resolved_at=now, resolved_by="emr-link", patient_ref=patient_ref, updated_at=now)
                ).rowcount
            )  # fmt: skip
