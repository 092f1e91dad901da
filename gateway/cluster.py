"""This process as a member of the cluster: its heartbeat, and the site leases it holds.

Every ``cluster.heartbeat_seconds`` the process registers in the index (the
cluster view of ``/health``) and asks for, or renews, each site lease it wants
(``cluster.lease_seconds`` long). What a lease guards starts when the lease is
gained and stops when it is lost: when another holds it, and also when this
process could not renew it in time (the index unreachable), since another may
take it over then. A lease counts as held only until shortly before it ends by
this process's own monotonic clock, measured from before the renewal was asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway import __version__
from gateway.settings import Settings
from storage.index.leases import Leases
from storage.index.nodes import NodeRegistry

log = logging.getLogger(__name__)

STALE_BEATS = 3  # a process not heard from for this many heartbeats is shown stale

Hook = Callable[[], Awaitable[None]]


@dataclass
class _Wanted:
    on_gain: Hook
    on_lose: Hook
    held_until: float = 0.0  # monotonic; 0: not held


async def _nothing() -> None:
    return None


class ClusterMember:
    """The heartbeat of one gateway process and the site leases it wants, renewed each beat."""

    def __init__(
        self, settings: Settings, engine: Any, *, role: str = "gateway", info: Callable[[], dict[str, Any]] = dict
    ) -> None:
        cluster = settings.cluster
        self.node = settings.node_name
        self.pid = os.getpid()
        self.holder = f"{self.node}/{self.pid}"
        self.process = f"{role}-{self.pid}"
        self.role = role
        self.heartbeat_seconds = cluster.heartbeat_seconds
        self.lease_seconds = cluster.lease_seconds
        self.registry = NodeRegistry(engine)
        self.leases = Leases(engine)
        self.info = info
        self.started_at = dt.datetime.now(dt.timezone.utc)
        self._wanted: dict[str, _Wanted] = {}
        self._task: asyncio.Task[None] | None = None
        self._beating: asyncio.Future[dict[str, tuple[bool | None, float]]] | None = None

    def want(self, name: str, on_gain: Hook = _nothing, on_lose: Hook = _nothing) -> None:
        """Ask for the site lease ``name`` each heartbeat; ``on_gain`` runs when it is taken, ``on_lose`` when lost."""
        self._wanted[name] = _Wanted(on_gain, on_lose)

    def holds(self, name: str) -> bool:
        wanted = self._wanted.get(name)
        return wanted is not None and time.monotonic() < wanted.held_until

    async def start(self) -> None:
        """Beat once (a lease free now is taken before start-up ends), then every heartbeat."""
        await self.beat_once()
        self._task = asyncio.create_task(self._run(), name="cluster-heartbeat")

    async def stop(self) -> None:
        """Stop beating, give up what is held (another takes it over at once) and leave the registry."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for name, wanted in self._wanted.items():
            if wanted.held_until:
                await self._lose(name, wanted, "stopping")
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.leases.release, name, self.holder)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.registry.forget, self.node, self.process)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._next_wait())
            try:
                await self.beat_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cluster heartbeat failed; trying again")

    def _next_wait(self) -> float:
        """A heartbeat, or less when a lease held would lapse before it (so that it is let go in time)."""
        now = time.monotonic()
        ends = [w.held_until - now for w in self._wanted.values() if w.held_until]
        return max(0.05, min([self.heartbeat_seconds, *ends]))

    def _beat(self) -> dict[str, tuple[bool | None, float]]:
        """In a worker thread: register the beat, then ask for each lease (True/False; None: the index failed), with
        the monotonic time each was asked at: a lease's time counts from its own request, however long the beat ran."""
        info = {"role": self.role, "pid": self.pid, "version": __version__, "started_at": self.started_at, **self.info()}
        try:
            self.registry.beat(self.node, self.process, info)
        except Exception as exc:  # the leases still lapse in time
            log.warning("cluster heartbeat not recorded (%s)", type(exc).__name__)
        answers: dict[str, tuple[bool | None, float]] = {}
        for name in list(self._wanted):
            asked = time.monotonic()
            try:
                answers[name] = (self.leases.acquire(name, self.holder, self.lease_seconds), asked)
            except Exception as exc:
                log.warning("site lease %s not renewed (%s)", name, type(exc).__name__)
                answers[name] = (None, asked)
        return answers

    async def beat_once(self) -> None:
        """One heartbeat. An index that does not answer (a hung connection, a lock) does not hold up letting go of
        a lease in time: the answer is waited for only until the first held lease would lapse."""
        asked = time.monotonic()
        if self._beating is None or self._beating.done():
            self._beating = asyncio.ensure_future(asyncio.to_thread(self._beat))
        # else: the previous beat's call still runs; wait for it rather than pile up threads
        held = [w.held_until - asked for w in self._wanted.values() if w.held_until]
        try:
            answers = await asyncio.wait_for(asyncio.shield(self._beating), max(0.01, min([self.lease_seconds, *held])))
        except asyncio.TimeoutError:
            answers = {}
        for name, wanted in self._wanted.items():
            ok, lease_asked = answers.get(name, (None, asked))
            if ok:
                gained = not wanted.held_until
                # Counted from before the renewal was asked, less a heartbeat's margin for clock drift and delay.
                wanted.held_until = lease_asked + max(self.lease_seconds - self.heartbeat_seconds, self.lease_seconds / 2)
                if gained:
                    log.info("site lease %s taken by %s", name, self.holder)
                    try:
                        await wanted.on_gain()
                    except Exception:
                        log.exception("starting what site lease %s guards failed; giving the lease back", name)
                        wanted.held_until = 0.0
                        with contextlib.suppress(Exception):
                            await asyncio.to_thread(self.leases.release, name, self.holder)
            elif wanted.held_until and (ok is False or time.monotonic() >= wanted.held_until):
                await self._lose(name, wanted, "held by another" if ok is False else "not renewed in time")

    async def _lose(self, name: str, wanted: _Wanted, why: str) -> None:
        wanted.held_until = 0.0
        if why == "stopping":
            log.info("site lease %s given up", name)
        else:
            log.warning("site lease %s lost (%s)", name, why)
        try:
            await wanted.on_lose()
        except Exception:
            log.exception("stopping what site lease %s guards failed", name)

    def view(self) -> dict[str, Any]:
        """The whole cluster as the index knows it (for /health): every process, its beat's age, stale or not."""
        processes = self.registry.cluster(stale_after=STALE_BEATS * self.heartbeat_seconds)
        return {
            "node": self.node,
            "holder": self.holder,
            "processes": processes,
            "leases": {name: self.leases.holder(name) for name in self._wanted},
        }
