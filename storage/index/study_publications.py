"""Stable studies for the EMR link: which changed and then stayed quiet, and announcing them in the outbox.

A study's ``updated_at`` moves whenever instances of it are indexed. Once it is
older than the quiet period the study is stable; announcing it queues one
``imaging-study`` message (or refreshes the one still waiting) and records
which state was announced, in one transaction, so that a study is announced
again exactly when it changed again. Each announced state also leaves its
idempotency key in the cluster's task table (``imaging-study:<uid>@<state>``),
in the same transaction: a state announced already, by any process of any
node, is not announced again. The keys matter only while two scans could
race (``study_publications`` remembers the state for good): they are
forgotten after a day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite

from storage.index.outbox import IMAGING_STUDY, enqueue, refresh_pending
from storage.index.schema import ix_studies_updated_at, studies, study_publications
from storage.index.tasks import DONE, TaskQueue, enqueue_on
from storage.index.times import as_utc, utc_now


ANNOUNCED = "announced"  # the task kind of the idempotency keys of announced study states
KEYS_KEPT = dt.timedelta(days=1)


class StudyPublications:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def ensure_index(self) -> None:
        """The index on studies.updated_at, for databases created before it existed."""
        ix_studies_updated_at.create(bind=self.engine, checkfirst=True)

    def forget_old_keys(self, *, older_than: dt.timedelta = KEYS_KEPT) -> int:
        """Drop the idempotency keys of states announced before ``older_than`` ago; how many."""
        return TaskQueue(self.engine).prune([ANNOUNCED], done_before=utc_now() - older_than)

    def last_announced(self) -> dt.datetime | None:
        """The newest study state announced so far (where the publisher resumes after a restart)."""
        with self.engine.connect() as conn:
            return as_utc(conn.execute(select(func.max(study_publications.c.study_updated_at))).scalar())

    def stable(self, *, cutoff: dt.datetime, since: dt.datetime | None, limit: int) -> list[tuple[str, dt.datetime]]:
        """Studies unchanged since ``cutoff`` (and changed after ``since``) whose current state was not announced."""
        p = study_publications
        stmt = (
            select(studies.c.study_uid, studies.c.updated_at)
            .outerjoin(p, p.c.study_uid == studies.c.study_uid)
            .where(
                studies.c.updated_at <= cutoff,
                studies.c.num_instances > 0,
                (p.c.study_uid.is_(None)) | (p.c.study_updated_at < studies.c.updated_at),
            )
            .order_by(studies.c.updated_at)
            .limit(limit)
        )
        if since is not None:
            stmt = stmt.where(studies.c.updated_at > since)
        with self.engine.connect() as conn:
            return [(uid, as_utc(updated)) for uid, updated in conn.execute(stmt)]

    def announce(self, stable: Sequence[tuple[str, dt.datetime]]) -> list[int]:
        """Queue (or refresh) each study's ``imaging-study`` message and record the announced state; the message pks
        (none for a state announced already)."""
        now = utc_now()
        pks = []
        with self.engine.begin() as conn:
            for study_uid, updated_at in stable:
                state = updated_at.astimezone(dt.timezone.utc).isoformat()
                if not enqueue_on(conn, ANNOUNCED, f"{IMAGING_STUDY}:{study_uid}@{state}", state=DONE):
                    continue  # this state was announced already (by another process, meanwhile)
                payload = {"study_updated_at": updated_at.isoformat()}
                pk = refresh_pending(conn, IMAGING_STUDY, study_uid, payload)
                pks.append(pk if pk is not None else enqueue(conn, IMAGING_STUDY, study_uid, payload))
                values = {"study_uid": study_uid, "study_updated_at": updated_at, "announced_at": now}
                stmt = self._insert(study_publications).values(**values)
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["study_uid"],
                        set_={"study_updated_at": updated_at, "announced_at": now},
                    )
                )
        return pks
