"""Cluster work claimed from the index exactly once: a task table with leases, attempts and idempotency keys.

Every process of every node that shares the index may ask for work; each row
is handed to one of them at a time, for a lease. The claim is one statement,
``UPDATE ... WHERE pk IN (SELECT ... LIMIT n) RETURNING``: on PostgreSQL the
inner select is ``FOR UPDATE SKIP LOCKED``, so claimers running at the same
moment take different rows without waiting for each other; SQLite runs one
writer at a time, so the statement is atomic there as it stands. A holder
that dies leaves its lease to expire, and the next claim takes the row.
Completing, failing and renewing all name the holder: a process whose lease
expired (stalled, then woke up) cannot mark what another now holds.

Lease times come from the database's clock on PostgreSQL (``now()``), so the
nodes' clocks need not agree; SQLite is one machine's file, and its clock.

The key is unique: queueing work whose key is queued or done already does
nothing, which is what makes announcing idempotent. :func:`claim_rows` is the
same claim on another table with ``holder`` and ``lease_until`` columns (the
outbox keeps its messages, and is claimed this way).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, Table, and_, delete, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from storage.index.schema import tasks
from storage.index.times import as_utc, utc_now

QUEUED, DONE, FAILED = "queued", "done", "failed"


@dataclass(frozen=True)
class Task:
    pk: int
    kind: str
    key: str
    payload: dict[str, Any]
    attempts: int  # this claim included
    last_reason: str
    lease_until: dt.datetime


def now_expr(conn: Connection) -> ColumnElement[Any]:
    """The current time as the database compares it: its own clock on PostgreSQL, ours on SQLite."""
    if conn.dialect.name == "postgresql":
        return func.now()
    return literal(utc_now(), DateTime(timezone=True))


def lease_end(conn: Connection, seconds: float) -> ColumnElement[Any]:
    if conn.dialect.name == "postgresql":
        return func.now() + dt.timedelta(seconds=seconds)
    return literal(utc_now() + dt.timedelta(seconds=seconds), DateTime(timezone=True))


def free(table: Table, conn: Connection) -> ColumnElement[bool]:
    """Rows no live lease holds."""
    return or_(table.c.lease_until.is_(None), table.c.lease_until < now_expr(conn))


def claim_rows(
    conn: Connection,
    table: Table,
    where: ColumnElement[bool],
    order_by: Sequence[Any],
    *,
    holder: str,
    limit: int,
    lease_seconds: float,
    values: dict[str, Any] | None = None,
) -> list[Any]:
    """Lease up to ``limit`` rows of ``table`` matching ``where`` (and held by no one) to ``holder``; the rows, in order."""
    pick = select(table.c.pk).where(where, free(table, conn)).order_by(*order_by).limit(limit)
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    stmt = (
        update(table)
        .where(table.c.pk.in_(pick))
        .values(holder=holder, lease_until=lease_end(conn, lease_seconds), **(values or {}))
        .returning(*table.c)
    )
    rows = list(conn.execute(stmt))
    keys = [c.key for c in order_by]
    rows.sort(key=lambda r: tuple(getattr(r, k) for k in keys))  # RETURNING keeps no order: the claim's
    return rows


def enqueue_on(
    conn: Connection, kind: str, key: str, payload: dict[str, Any] | None = None, *, due: dt.datetime | None = None, state: str = QUEUED
) -> bool:
    """Queue a task on the caller's connection (it commits with the caller's change); False when the key exists."""
    now = utc_now()
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(tasks).values(
        kind=kind, key=key, payload=json.dumps(payload or {}, ensure_ascii=False), state=state,
        due_at=due or now, holder="", attempts=0, last_reason="", created_at=now,
        done_at=now if state == DONE else None,
    ).on_conflict_do_nothing(index_elements=["key"]).returning(tasks.c.pk)  # fmt: skip
    return conn.execute(stmt).first() is not None  # (rowcount is not told for an upsert by every driver)


class TaskQueue:
    """The cluster's task table: queue work once by key, claim it for a lease, complete, fail or renew it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def enqueue(self, kind: str, key: str, payload: dict[str, Any], *, due: dt.datetime | None = None) -> bool:
        """Queue a task; False when a task with this key is queued or done already."""
        with self.engine.begin() as conn:
            return enqueue_on(conn, kind, key, payload, due=due)

    def claim(self, kinds: Sequence[str], holder: str, *, limit: int, lease_seconds: float) -> list[Task]:
        """Lease up to ``limit`` due tasks of these kinds to ``holder`` (each counts an attempt), oldest due first."""
        with self.engine.begin() as conn:
            due = and_(tasks.c.state == QUEUED, tasks.c.kind.in_(list(kinds)), tasks.c.due_at <= now_expr(conn))
            rows = claim_rows(
                conn, tasks, due, (tasks.c.due_at, tasks.c.pk), holder=holder, limit=limit,
                lease_seconds=lease_seconds, values={"attempts": tasks.c.attempts + 1},
            )  # fmt: skip
        return [
            Task(r.pk, r.kind, r.key, json.loads(r.payload or "{}"), r.attempts, r.last_reason, as_utc(r.lease_until))
            for r in rows
        ]

    def complete(self, task: Task, holder: str) -> bool:
        """Mark done (its key stays, so the work is not queued again); False when ``holder`` no longer held it."""
        return self._finish(task, holder, state=DONE, done_at=utc_now())

    def fail(self, task: Task, holder: str, reason: str, retry_at: dt.datetime | None) -> bool:
        """Record why it failed (no patient data) and retry at ``retry_at``, or give up (None); False when not held."""
        if retry_at is None:
            return self._finish(task, holder, state=FAILED, last_reason=reason[:512], done_at=utc_now())
        return self._finish(task, holder, last_reason=reason[:512], due_at=retry_at)

    def release(self, task: Task, holder: str) -> bool:
        """Give the task back unfinished (shutting down): due at once for anyone, the attempt not counted."""
        return self._finish(task, holder, attempts=tasks.c.attempts - 1)

    def _finish(self, task: Task, holder: str, **values: Any) -> bool:
        with self.engine.begin() as conn:
            stmt = update(tasks).where(tasks.c.pk == task.pk, tasks.c.holder == holder, tasks.c.state == QUEUED)
            return bool(conn.execute(stmt.values(holder="", lease_until=None, **values)).rowcount)

    def renew(self, held: Sequence[Task], holder: str, lease_seconds: float) -> set[int]:
        """Extend the leases ``holder`` still has on these tasks; the pks still held (a lost one is another's now)."""
        if not held:
            return set()
        with self.engine.begin() as conn:
            stmt = (
                update(tasks)
                .where(tasks.c.pk.in_([t.pk for t in held]), tasks.c.holder == holder, tasks.c.state == QUEUED)
                .values(lease_until=lease_end(conn, lease_seconds))
                .returning(tasks.c.pk)
            )
            return {int(pk) for pk in conn.execute(stmt).scalars()}

    def prune(self, kinds: Sequence[str], *, done_before: dt.datetime) -> int:
        """Forget tasks of these kinds done (or given up) before ``done_before``, keys included; how many."""
        with self.engine.begin() as conn:
            stmt = delete(tasks).where(tasks.c.kind.in_(list(kinds)), tasks.c.state != QUEUED, tasks.c.done_at < done_before)
            return int(conn.execute(stmt).rowcount)

    def get(self, key: str) -> dict[str, Any] | None:
        """A task by key, without its payload (for the admin view and tests)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(tasks.c.pk, tasks.c.kind, tasks.c.key, tasks.c.state, tasks.c.holder, tasks.c.attempts, tasks.c.last_reason)
                .where(tasks.c.key == key)
            ).first()
        return dict(row._mapping) if row is not None else None
