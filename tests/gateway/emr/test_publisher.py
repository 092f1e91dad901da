"""Stable-study detection: a study is announced once no instance arrived for ``stable_seconds``, once per change,
with one waiting message per study; a restarted publisher does not announce again."""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import select

from gateway.emr.publisher import StablePublisher
from storage.index.database import IndexDatabase
from storage.index.outbox import IMAGING_STUDY, Outbox
from storage.index.schema import studies
from storage.index.study_publications import StudyPublications
from tests.factory import ct_series
from tests.storage.conftest import records


def _updated(index: IndexDatabase, study: str) -> dt.datetime:
    with index.engine.connect() as conn:
        value = conn.execute(select(studies.c.updated_at).where(studies.c.study_uid == study)).scalar_one()
    return value.replace(tzinfo=dt.timezone.utc)


def test_announced_when_quiet_and_again_after_more_instances(sqlite_index: IndexDatabase) -> None:
    woken: list[int] = []
    publisher = StablePublisher(StudyPublications(sqlite_index.engine), stable_seconds=2.0, on_announce=lambda: woken.append(1))
    assert publisher.poll_seconds == 0.5
    series = ct_series(2, size=16)
    study = series[0].StudyInstanceUID
    sqlite_index.commit(records(series))
    quiet = _updated(sqlite_index, study) + dt.timedelta(seconds=2)
    outbox = Outbox(sqlite_index.engine)

    async def scenario() -> None:
        assert await publisher.run_once(now=quiet - dt.timedelta(seconds=0.5)) == 0  # instances may still come
        assert await publisher.run_once(now=quiet) == 1 and woken == [1]
        assert await publisher.run_once(now=quiet + dt.timedelta(minutes=1)) == 0
        sqlite_index.commit(records(ct_series(1, size=16, study_uid=study)))
        later = _updated(sqlite_index, study) + dt.timedelta(seconds=2)
        assert await publisher.run_once(now=later) == 1
        restarted = StablePublisher(StudyPublications(sqlite_index.engine), stable_seconds=2.0)
        assert await restarted.run_once(now=later + dt.timedelta(hours=1)) == 0

    asyncio.run(scenario())
    [message] = outbox.due_any([IMAGING_STUDY])  # one waiting message, with the latest state
    assert message.subject == study and message.payload["study_updated_at"] == _updated(sqlite_index, study).isoformat()
    assert StablePublisher(StudyPublications(sqlite_index.engine), stable_seconds=60).poll_seconds == 1.0


def test_only_the_holder_of_the_scan_lease_announces(sqlite_index: IndexDatabase) -> None:
    """Two processes' publishers: the one allowed to scan announces; the other, taking over, does not repeat it."""
    holder = {"a": True, "b": False}
    a = StablePublisher(StudyPublications(sqlite_index.engine), stable_seconds=1.0, may_scan=lambda: holder["a"])
    b = StablePublisher(StudyPublications(sqlite_index.engine), stable_seconds=1.0, may_scan=lambda: holder["b"])
    series = ct_series(1, size=16)
    sqlite_index.commit(records(series))
    quiet = _updated(sqlite_index, series[0].StudyInstanceUID) + dt.timedelta(seconds=1)

    async def scenario() -> None:
        assert await b.run_once(now=quiet) == 0  # not its turn
        assert await a.run_once(now=quiet) == 1
        holder.update(a=False, b=True)  # a died; b took the lease over
        assert await a.run_once(now=quiet) == 0
        assert await b.run_once(now=quiet + dt.timedelta(minutes=1)) == 0  # announced already, by a

    asyncio.run(scenario())
    assert len(Outbox(sqlite_index.engine).due_any([IMAGING_STUDY])) == 1
