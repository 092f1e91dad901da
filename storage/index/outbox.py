"""The outbox: messages for other systems, written in the transaction of the change they announce.

A producer calls :func:`enqueue` on its own open connection; a consumer (the
EMR link) claims what is due, delivers it, and marks each item delivered or
failed with the time of its next attempt. Claiming leases the rows to one
worker (``<node>/<pid>``) the way the cluster's task table does
(storage.index.tasks.claim_rows): two workers of any nodes never hold one
message at once, and a worker that dies mid-delivery leaves a lease that runs
out, then another claims the message and finishes it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from storage.index.schema import outbox, outbox_acceptances
from storage.index.tasks import claim_rows, lease_end
from storage.index.times import as_utc, utc_now

DIAGNOSTIC_REPORT = "diagnostic-report"  # a report signed final; the subject is its study UID
IMAGING_STUDY = "imaging-study"  # a study stable for a while (again); the subject is its study UID
STATES = ("pending", "failed", "delivered")  # never tried yet / tried and failed / delivered


@dataclass(frozen=True)
class OutboxItem:
    pk: int
    kind: str
    subject: str
    payload: dict[str, Any]
    created_at: dt.datetime
    attempts: int
    last_error: str
    payload_json: str = ""  # the payload as stored, to tell whether it changed during a delivery


def enqueue(conn: Connection, kind: str, subject: str, payload: dict[str, Any]) -> int:
    """Queue one message on the caller's connection: it commits or rolls back with the caller's change."""
    now = utc_now()
    values = {
        "kind": kind,
        "subject": subject,
        "payload": json.dumps(payload, ensure_ascii=False),
        "created_at": now,
        "attempts": 0,
        "next_attempt_at": now,
        "last_error": "",
    }
    return int(conn.execute(insert(outbox).values(**values).returning(outbox.c.pk)).scalar_one())


def refresh_pending(conn: Connection, kind: str, subject: str, payload: dict[str, Any]) -> int | None:
    """Replace the payload of the subject's undelivered message of this kind, if there is one; its pk, else None.

    Its schedule is kept: a message waiting out a backoff goes on waiting."""
    pk = conn.execute(
        select(outbox.c.pk)
        .where(outbox.c.kind == kind, outbox.c.subject == subject, outbox.c.delivered_at.is_(None))
        .order_by(outbox.c.pk)
        .limit(1)
    ).scalar()
    if pk is None:
        return None
    refreshed = conn.execute(  # delivered meanwhile (another transaction): the caller enqueues anew
        update(outbox).where(outbox.c.pk == pk, outbox.c.delivered_at.is_(None)).values(payload=json.dumps(payload, ensure_ascii=False))
    ).rowcount
    return int(pk) if refreshed else None


class Outbox:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def due(self, kind: str, *, limit: int = 50, now: dt.datetime | None = None) -> list[OutboxItem]:
        """Undelivered messages of a kind whose next attempt has come, oldest first."""
        stmt = (
            select(outbox)
            .where(outbox.c.kind == kind, outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at <= (now or utc_now()))
            .order_by(outbox.c.pk)
            .limit(limit)
        )
        return self._items(stmt)

    def due_any(self, kinds: Sequence[str], *, limit: int = 50, now: dt.datetime | None = None) -> list[OutboxItem]:
        """Undelivered messages of any of these kinds whose next attempt has come, oldest first."""
        stmt = (
            select(outbox)
            .where(outbox.c.kind.in_(list(kinds)), outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at <= (now or utc_now()))
            .order_by(outbox.c.pk)
            .limit(limit)
        )
        return self._items(stmt)

    def claim(
        self, kinds: Sequence[str], holder: str, *, limit: int = 50, lease_seconds: float, now: dt.datetime | None = None
    ) -> list[OutboxItem]:
        """Lease due undelivered messages of these kinds that no one holds to ``holder``, oldest first."""
        with self.engine.begin() as conn:
            due = and_(
                outbox.c.kind.in_(list(kinds)), outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at <= (now or utc_now())
            )
            rows = claim_rows(conn, outbox, due, (outbox.c.pk,), holder=holder, limit=limit, lease_seconds=lease_seconds)
        return [self._item(r) for r in rows]

    def renew(self, pks: Sequence[int], holder: str, lease_seconds: float) -> set[int]:
        """Extend ``holder``'s leases on these messages; the pks it still holds."""
        if not pks:
            return set()
        with self.engine.begin() as conn:
            stmt = (
                update(outbox)
                .where(outbox.c.pk.in_(list(pks)), outbox.c.holder == holder, outbox.c.delivered_at.is_(None))
                .values(lease_until=lease_end(conn, lease_seconds))
                .returning(outbox.c.pk)
            )
            return {int(pk) for pk in conn.execute(stmt).scalars()}

    def release(self, pks: Sequence[int], holder: str) -> None:
        """Give messages back unfinished (their schedule kept): anyone may claim them at once."""
        if not pks:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(outbox).where(outbox.c.pk.in_(list(pks)), outbox.c.holder == holder).values(holder="", lease_until=None)
            )

    def _items(self, stmt: Any) -> list[OutboxItem]:
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [self._item(r) for r in rows]

    @staticmethod
    def _item(r: Any) -> OutboxItem:
        return OutboxItem(r.pk, r.kind, r.subject, json.loads(r.payload), as_utc(r.created_at), r.attempts, r.last_error, r.payload)

    def delivered(self, pk: int, *, payload_json: str | None = None) -> bool:
        """Mark delivered; with ``payload_json``, only if the payload is still that one (else False: deliver again)."""
        stmt = update(outbox).where(outbox.c.pk == pk, outbox.c.delivered_at.is_(None))
        if payload_json is not None:
            stmt = stmt.where(outbox.c.payload == payload_json)
        with self.engine.begin() as conn:
            return bool(conn.execute(stmt.values(delivered_at=utc_now(), holder="", lease_until=None)).rowcount)

    def failed(
        self,
        pk: int,
        error: str,
        *,
        retry_at: dt.datetime,
        attempted_at: dt.datetime | None = None,
        counted: bool = True,
        holder: str | None = None,
    ) -> None:
        """Count a failed attempt (``counted``: one was made) and schedule the next; a retry asked for while the
        attempt ran (an administrator's, or a reconciliation resolved) keeps its earlier time. With ``holder``, only
        while that holder still has the message: a worker whose lease ran out never frees one another holds now."""
        when = retry_at if attempted_at is None else case((outbox.c.next_attempt_at > attempted_at, outbox.c.next_attempt_at), else_=retry_at)
        with self.engine.begin() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.pk == pk, *(() if holder is None else (outbox.c.holder == holder,)))
                .values(
                    attempts=outbox.c.attempts + (1 if counted else 0), next_attempt_at=when, last_error=error[:512],
                    holder="", lease_until=None,
                )
            )

    def make_due(self, *, pk: int | None = None, subject: str | None = None) -> int:
        """Have undelivered messages (one, or all of a subject) tried at once; how many there were."""
        stmt = update(outbox).where(outbox.c.delivered_at.is_(None))
        if pk is not None:
            stmt = stmt.where(outbox.c.pk == pk)
        if subject is not None:
            stmt = stmt.where(outbox.c.subject == subject)
        with self.engine.begin() as conn:
            return int(conn.execute(stmt.values(next_attempt_at=utc_now())).rowcount)

    def row(self, pk: int) -> dict[str, Any] | None:
        rows = self._listing(select(*_LISTED).where(outbox.c.pk == pk))
        return rows[0] if rows else None

    def listing(self, state: str | None = None, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Messages without their payload (it carries patient data), newest first; ``state`` one of ``STATES``."""
        stmt = select(*_LISTED).order_by(outbox.c.pk.desc()).limit(limit).offset(offset)
        if state == "pending":
            stmt = stmt.where(outbox.c.delivered_at.is_(None), outbox.c.attempts == 0)
        elif state == "failed":
            stmt = stmt.where(outbox.c.delivered_at.is_(None), outbox.c.attempts > 0)
        elif state == "delivered":
            stmt = stmt.where(outbox.c.delivered_at.is_not(None))
        return self._listing(stmt)

    def _listing(self, stmt: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
        for row in rows:
            for key in ("created_at", "next_attempt_at", "delivered_at"):
                row[key] = as_utc(row[key]).isoformat() if row[key] is not None else None
        return rows

    def backlog(self, kinds: Sequence[str]) -> tuple[int, dt.datetime | None]:
        """How many messages of these kinds are undelivered, and when the oldest was queued."""
        with self.engine.connect() as conn:
            count, oldest = conn.execute(
                select(func.count(), func.min(outbox.c.created_at)).where(
                    outbox.c.kind.in_(list(kinds)), outbox.c.delivered_at.is_(None)
                )
            ).one()
        return int(count), as_utc(oldest) if oldest is not None else None

    def accepted(self, pk: int, destination: str) -> None:
        """Record that one destination of a message took it (the message stays undelivered until all have)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(outbox_acceptances).values(outbox_pk=pk, destination=destination, accepted_at=utc_now()))
        except IntegrityError:
            pass  # recorded already

    def acceptances(self, pk: int) -> set[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(outbox_acceptances.c.destination).where(outbox_acceptances.c.outbox_pk == pk))
            return {r[0] for r in rows}


_LISTED = (
    outbox.c.pk.label("id"), outbox.c.kind, outbox.c.subject, outbox.c.attempts, outbox.c.last_error,
    outbox.c.created_at, outbox.c.next_attempt_at, outbox.c.delivered_at,
)  # fmt: skip
