"""Stable studies: found once quiet, announced once (one waiting message per study), again when they change."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from storage.index.database import IndexDatabase
from storage.index.outbox import IMAGING_STUDY, Outbox
from storage.index.schema import studies
from storage.index.study_publications import StudyPublications
from tests.factory import ct_series
from tests.storage.conftest import records


def _updated(index: IndexDatabase, study: str) -> dt.datetime:
    with index.engine.connect() as conn:
        value = conn.execute(select(studies.c.updated_at).where(studies.c.study_uid == study)).scalar_one()
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def test_a_quiet_study_is_announced_once_and_again_after_it_changed(index: IndexDatabase) -> None:
    publications = StudyPublications(index.engine)
    publications.ensure_index()
    publications.ensure_index()  # idempotent
    outbox = Outbox(index.engine)
    first = ct_series(2, size=16)
    study = first[0].StudyInstanceUID
    index.commit(records(first))
    updated = _updated(index, study)

    assert publications.stable(cutoff=updated - dt.timedelta(seconds=1), since=None, limit=10) == []  # not quiet yet
    found = publications.stable(cutoff=updated, since=None, limit=10)
    assert found == [(study, updated)]
    assert publications.stable(cutoff=updated, since=updated, limit=10) == []  # nothing changed after `since`
    [pk] = publications.announce(found)
    assert publications.last_announced() == updated
    assert publications.stable(cutoff=updated + dt.timedelta(hours=1), since=None, limit=10) == []  # announced

    # More instances: the study changes, is announced again; the waiting message is refreshed, not doubled.
    index.commit(records(ct_series(1, size=16, study_uid=study)))
    changed = _updated(index, study)
    assert changed > updated
    found = publications.stable(cutoff=changed, since=updated - dt.timedelta(minutes=5), limit=10)
    assert found == [(study, changed)]
    assert publications.announce(found) == [pk]
    [item] = outbox.due_any([IMAGING_STUDY])
    assert item.pk == pk and item.payload == {"study_updated_at": changed.isoformat()}

    # Once that message is delivered, the next change needs a new one.
    outbox.delivered(pk)
    index.commit(records(ct_series(1, size=16, study_uid=study)))
    again = publications.stable(cutoff=dt.datetime.now(dt.timezone.utc), since=None, limit=10)
    [new_pk] = publications.announce(again)
    assert new_pk != pk and [i.pk for i in outbox.due_any([IMAGING_STUDY])] == [new_pk]


def test_studies_come_oldest_first_in_batches(index: IndexDatabase) -> None:
    publications = StudyPublications(index.engine)
    uids = []
    for _ in range(3):
        series = ct_series(1, size=16)
        index.commit(records(series))
        uids.append(series[0].StudyInstanceUID)
    now = dt.datetime.now(dt.timezone.utc)
    batch = publications.stable(cutoff=now, since=None, limit=2)
    assert [uid for uid, _ in batch] == uids[:2]
    publications.announce(batch)
    assert [uid for uid, _ in publications.stable(cutoff=now, since=None, limit=2)] == uids[2:]


def test_two_scans_that_found_the_same_state_announce_it_once(index: IndexDatabase) -> None:
    """Two processes that scanned at the same moment (before either announced) queue one message between them."""
    first, second = StudyPublications(index.engine), StudyPublications(index.engine)
    series = ct_series(1, size=16)
    index.commit(records(series))
    study = series[0].StudyInstanceUID
    updated = _updated(index, study)
    found_by_one = first.stable(cutoff=updated, since=None, limit=10)
    found_by_other = second.stable(cutoff=updated, since=None, limit=10)
    assert found_by_one == found_by_other == [(study, updated)]
    [pk] = first.announce(found_by_one)
    assert second.announce(found_by_other) == []  # the same state: announced already
    assert [i.pk for i in Outbox(index.engine).due_any([IMAGING_STUDY])] == [pk]


def test_the_idempotency_keys_of_announced_states_are_forgotten_after_a_while(index: IndexDatabase) -> None:
    publications = StudyPublications(index.engine)
    series = ct_series(1, size=16)
    index.commit(records(series))
    updated = _updated(index, series[0].StudyInstanceUID)
    [_] = publications.announce(publications.stable(cutoff=updated, since=None, limit=10))
    assert publications.forget_old_keys() == 0  # announced just now: kept
    assert publications.forget_old_keys(older_than=dt.timedelta(seconds=-1)) == 1
    # the state stays remembered in study_publications: not found stable again
    assert publications.stable(cutoff=updated + dt.timedelta(hours=1), since=None, limit=10) == []
