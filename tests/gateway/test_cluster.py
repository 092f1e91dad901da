"""This process in the cluster (gateway.cluster): a free site lease is taken at the first beat and what it guards
starts; a lease another process took, or one that could not be renewed in time, stops what it guards; a clean stop
gives the lease up at once and leaves the registry."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator

from sqlalchemy import select, update

from gateway.cluster import ClusterMember
from gateway.settings import ClusterSettings, Settings
from storage.index.database import IndexDatabase
from storage.index.leases import Leases
from storage.index.schema import site_leases


def member(index: IndexDatabase, node: str) -> ClusterMember:
    settings = Settings(cluster=ClusterSettings(node_name=node, heartbeat_seconds=0.1, lease_seconds=1.0))
    return ClusterMember(settings, index.engine, info=lambda: {"spool_backlog": 7})


async def _until(what: str, probe, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.02)


def test_a_site_lease_starts_and_stops_what_it_guards(index: IndexDatabase) -> None:
    events: list[str] = []

    async def scenario() -> None:
        a, b = member(index, "node-a"), member(index, "node-b")

        async def gained(name: str) -> None:
            events.append(f"{name} gained")

        async def lost(name: str) -> None:
            events.append(f"{name} lost")

        a.want("hl7-listener", lambda: gained("a"), lambda: lost("a"))
        b.want("hl7-listener", lambda: gained("b"), lambda: lost("b"))
        await a.start()
        await b.start()
        assert events == ["a gained"] and a.holds("hl7-listener") and not b.holds("hl7-listener")
        view = a.view()
        assert view["leases"] == {"hl7-listener": a.holder} and {p["node"] for p in view["processes"]} == {"node-a", "node-b"}
        assert {p["spool_backlog"] for p in view["processes"]} == {7}

        # The lease passes to b behind a's back (a stalled past it): a's next beat stops what it guards.
        with index.engine.begin() as conn:
            conn.execute(update(site_leases).values(holder=b.holder))
        await _until("a lets go and b takes over", lambda: events[1:] == ["a lost", "b gained"])
        assert not a.holds("hl7-listener") and b.holds("hl7-listener")

        await b.stop()  # a clean stop: given up at once, and b leaves the registry
        assert events[-1] == "b lost" and Leases(index.engine).holder("hl7-listener") in (None, a.holder)
        await _until("a takes it again", lambda: events[-1] == "a gained")
        assert [p["node"] for p in a.view()["processes"]] == ["node-a"]

        # The index does not answer (another transaction holds the lease row locked): a cannot renew, and stops
        # what the lease guards before the lease could run out.
        with locked(index):
            locked_at = time.monotonic()
            await _until("a lets go of a lease it cannot renew", lambda: events[-1] == "a lost")
            assert time.monotonic() - locked_at < 1.0  # the lease: 1 s
        await _until("a takes it again once the index answers", lambda: events[-1] == "a gained")
        await a.stop()

    asyncio.run(scenario())


@contextlib.contextmanager
def locked(index: IndexDatabase) -> Iterator[None]:
    """Hold the site leases locked in another transaction (SQLite: the whole database) until the block ends."""
    if index.dialect == "postgresql":
        with index.engine.connect() as conn, conn.begin():
            conn.execute(select(site_leases).with_for_update())
            yield
        return
    path = index.engine.url.database
    raw = sqlite3.connect(str(path), isolation_level=None)
    raw.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        raw.execute("ROLLBACK")
        raw.close()
