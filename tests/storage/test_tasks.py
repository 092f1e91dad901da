"""Cluster work in the index, on SQLite and PostgreSQL: a task is queued once per key, claimed by one holder at a
time (also by many claimers at once), taken over when its lease runs out, retried with a reason; site leases and
the heartbeat registry; outbox messages claimed the same way."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

from storage.index.database import IndexDatabase
from storage.index.leases import Leases
from storage.index.nodes import NodeRegistry
from storage.index.outbox import DIAGNOSTIC_REPORT, IMAGING_STUDY, Outbox, enqueue
from storage.index.tasks import TaskQueue


def poll(what: str, probe: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout} s")


def test_a_key_is_queued_once_even_after_it_is_done(index: IndexDatabase) -> None:
    queue = TaskQueue(index.engine)
    assert queue.enqueue("publish", "study:1.2.3@t1", {"n": 1}) is True
    assert queue.enqueue("publish", "study:1.2.3@t1", {"n": 2}) is False
    [task] = queue.claim(["publish"], "a/1", limit=10, lease_seconds=30)
    assert (task.key, task.payload, task.attempts) == ("study:1.2.3@t1", {"n": 1}, 1)
    assert queue.complete(task, "a/1") is True
    assert queue.enqueue("publish", "study:1.2.3@t1", {"n": 3}) is False
    assert queue.claim(["publish"], "b/2", limit=10, lease_seconds=30) == []
    assert queue.get("study:1.2.3@t1")["state"] == "done"


def test_a_claimed_task_is_nobody_elses_until_its_lease_runs_out(index: IndexDatabase) -> None:
    queue = TaskQueue(index.engine)
    for n in range(3):
        queue.enqueue("deliver", f"k{n}", {})
    queue.enqueue("other", "k-other", {})
    held = queue.claim(["deliver"], "a/1", limit=10, lease_seconds=0.5)
    assert [t.key for t in held] == ["k0", "k1", "k2"]
    assert queue.claim(["deliver"], "b/2", limit=10, lease_seconds=30) == []
    assert queue.renew(held, "a/1", 0.5) == {t.pk for t in held}
    # a/1 dies: b/2 takes the tasks once the lease has run out; each counts a second attempt
    taken = poll("expired leases claimed", lambda: queue.claim(["deliver"], "b/2", limit=10, lease_seconds=30))
    assert sorted(t.key for t in taken) == ["k0", "k1", "k2"] and {t.attempts for t in taken} == {2}
    assert queue.complete(held[0], "a/1") is False  # the stalled holder cannot mark what b/2 holds now
    assert queue.renew(held, "a/1", 30) == set()
    assert queue.complete(taken[0], "b/2") is True


def test_failing_records_the_reason_and_retries_later_or_gives_up(index: IndexDatabase) -> None:
    queue = TaskQueue(index.engine)
    queue.enqueue("deliver", "later", {})
    queue.enqueue("deliver", "never", {})
    later, never = queue.claim(["deliver"], "a/1", limit=10, lease_seconds=30)
    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=0.5)
    assert queue.fail(later, "a/1", "fhir: HTTP 503", soon) is True
    assert queue.fail(never, "a/1", "fhir: HTTP 422 (refused)", None) is True
    assert queue.get("never")["state"] == "failed" and queue.get("never")["last_reason"] == "fhir: HTTP 422 (refused)"
    assert queue.claim(["deliver"], "b/2", limit=10, lease_seconds=30) == []  # waits for its retry time
    [again] = poll("the retry", lambda: queue.claim(["deliver"], "b/2", limit=10, lease_seconds=30))
    assert (again.key, again.attempts, again.last_reason) == ("later", 2, "fhir: HTTP 503")


def test_many_claimers_at_once_take_each_task_exactly_once(index: IndexDatabase) -> None:
    queue = TaskQueue(index.engine)
    for n in range(60):
        queue.enqueue("deliver", f"k{n}", {})
    taken: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def claimer(name: str) -> None:
        mine = taken.setdefault(name, [])
        try:
            while batch := queue.claim(["deliver"], name, limit=3, lease_seconds=60):
                for task in batch:
                    mine.append(task.key)
                    assert queue.complete(task, name)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(f"node{n}/1",)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    claimed = [key for keys in taken.values() for key in keys]
    assert sorted(claimed) == sorted(f"k{n}" for n in range(60))  # all, none twice


def test_a_site_lease_has_one_holder_and_passes_on_when_it_runs_out(index: IndexDatabase) -> None:
    leases = Leases(index.engine)
    assert leases.acquire("hl7-listener", "a/1", 0.5) is True
    assert leases.acquire("hl7-listener", "b/2", 0.5) is False
    assert leases.acquire("hl7-listener", "a/1", 0.5) is True  # renewed
    assert leases.holder("hl7-listener") == "a/1"
    assert leases.acquire("stable-study-scan", "b/2", 30) is True  # another name, another lease
    poll("lease taken over", lambda: leases.acquire("hl7-listener", "b/2", 30))
    assert leases.holder("hl7-listener") == "b/2"
    assert leases.acquire("hl7-listener", "a/1", 30) is False
    leases.release("hl7-listener", "a/1")  # not a/1's any more: nothing happens
    assert leases.holder("hl7-listener") == "b/2"
    leases.release("hl7-listener", "b/2")
    assert leases.holder("hl7-listener") is None
    assert leases.acquire("hl7-listener", "a/1", 30) is True


def test_the_registry_lists_every_process_with_the_age_of_its_beat(index: IndexDatabase) -> None:
    nodes = NodeRegistry(index.engine)
    started = dt.datetime.now(dt.timezone.utc)
    nodes.beat("node-a", "gateway-11", {"role": "gateway", "pid": 11, "version": "0.1.0", "started_at": started, "spool_backlog": 3})
    nodes.beat("node-b", "gateway-12", {"role": "gateway", "pid": 12, "version": "0.1.0", "started_at": started})
    nodes.beat("node-a", "gateway-11", {"role": "gateway", "pid": 11, "version": "0.1.0", "started_at": started, "spool_backlog": 0})
    a, b = nodes.cluster(stale_after=60)
    assert (a["node"], a["pid"], a["spool_backlog"], a["stale"]) == ("node-a", 11, 0, False)
    assert b["node"] == "node-b" and 0 <= b["age_seconds"] < 60
    assert all(p["stale"] for p in nodes.cluster(stale_after=0.0))
    nodes.forget("node-b", "gateway-12")
    assert [p["node"] for p in nodes.cluster()] == ["node-a"]


def test_outbox_messages_are_claimed_by_one_worker_and_taken_over_after_its_lease(index: IndexDatabase) -> None:
    outbox = Outbox(index.engine)
    with index.engine.begin() as conn:
        first = enqueue(conn, IMAGING_STUDY, "1.2.1", {"n": 1})
        second = enqueue(conn, DIAGNOSTIC_REPORT, "1.2.1", {"n": 2})
    held = outbox.claim([IMAGING_STUDY, DIAGNOSTIC_REPORT], "a/1", lease_seconds=0.5)
    assert [i.pk for i in held] == [first, second]
    assert outbox.claim([IMAGING_STUDY, DIAGNOSTIC_REPORT], "b/2", lease_seconds=30) == []
    assert outbox.delivered(first) is True  # delivered: no one claims it again
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    outbox.release([second], "a/1")
    [again] = outbox.claim([DIAGNOSTIC_REPORT], "b/2", lease_seconds=0.5)  # released: at once
    assert again.pk == second and outbox.renew([second], "a/1", 30) == set()
    taken = poll("expired lease", lambda: outbox.claim([DIAGNOSTIC_REPORT], "c/3", lease_seconds=30))
    assert [i.pk for i in taken] == [second]
    outbox.failed(second, "hl7: no ACK", retry_at=later)
    assert outbox.claim([DIAGNOSTIC_REPORT], "c/3", lease_seconds=30) == []  # waits for its retry, not held
    assert outbox.row(second)["attempts"] == 1
