"""The outbox: messages for other systems, written in the transaction of the change they announce.

A producer calls :func:`enqueue` on its own open connection; a consumer (the
EMR link) takes what is due, delivers it, and marks each item delivered or
failed with the time of its next attempt.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from storage.index.schema import outbox

DIAGNOSTIC_REPORT = "diagnostic-report"  # a report signed final; the subject is its study UID


@dataclass(frozen=True)
class OutboxItem:
    pk: int
    kind: str
    subject: str
    payload: dict[str, Any]
    created_at: dt.datetime
    attempts: int
    last_error: str


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def enqueue(conn: Connection, kind: str, subject: str, payload: dict[str, Any]) -> int:
    """Queue one message on the caller's connection: it commits or rolls back with the caller's change."""
    now = _now()
    values = {
        "kind": kind,
        "subject": subject,
        "payload": json.dumps(payload, ensure_ascii=False),
        "created_at": now,
        "attempts": 0,
        "next_attempt_at": now,
        "last_error": "",
    }
    return int(conn.execute(insert(outbox).values(**values)).inserted_primary_key[0])


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)  # SQLite returns naive datetimes


class Outbox:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def due(self, kind: str, *, limit: int = 50, now: dt.datetime | None = None) -> list[OutboxItem]:
        """Undelivered messages of a kind whose next attempt has come, oldest first."""
        stmt = (
            select(outbox)
            .where(outbox.c.kind == kind, outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at <= (now or _now()))
            .order_by(outbox.c.pk)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            OutboxItem(r.pk, r.kind, r.subject, json.loads(r.payload), _aware(r.created_at), r.attempts, r.last_error)
            for r in rows
        ]

    def delivered(self, pk: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(outbox).where(outbox.c.pk == pk).values(delivered_at=_now()))

    def failed(self, pk: int, error: str, *, retry_at: dt.datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.pk == pk)
                .values(attempts=outbox.c.attempts + 1, next_attempt_at=retry_at, last_error=error[:512])
            )
