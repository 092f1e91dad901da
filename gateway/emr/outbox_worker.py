"""The outbox worker: takes due messages, hands each to its EMR destinations, marks it delivered or retries later.

- A message is delivered once every destination configured for its kind took
  it; a destination that took it is not sent it again when another failed.
- A failure counts an attempt, keeps a short reason (no patient data) and
  schedules the next attempt: ``retry_initial`` doubling up to ``retry_max``,
  with jitter. A refusal that will not change by itself (HTTP 4xx) waits
  ``retry_max``, visible in the admin API meanwhile.
- A destination that cannot be reached is paused for the failed message's
  wait: one message probes it, the others keep their place and attempts.
- A message parked for reconciliation waits ``retry_max`` (or until an
  administrator resolves it; each attempt matches the patient again).
- A message whose payload changed during its delivery (the study got more
  instances) is delivered again at once.

- Messages are claimed for a lease (``<node>/<pid>``, renewed while the
  batch is delivered): a worker of another process or node never sends a
  message this one holds. A worker that dies leaves its leases to run out;
  then another claims the messages and delivers them.

Runs as one asyncio task; every database call goes through a worker thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Sequence
from typing import Protocol

from gateway.emr.errors import DeliveryError, Parked
from gateway.metrics import GatewayMetrics
from storage.index.outbox import IMAGING_STUDY, Outbox, OutboxItem
from storage.index.reconciliation import ReconciliationQueue

log = logging.getLogger(__name__)
_WAITING = DeliveryError("paused")  # stands for a destination not tried: it is paused, being unreachable

BATCH = 20
GAUGE_SECONDS = 1.0


class Destination(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def kinds(self) -> tuple[str, ...]: ...

    async def deliver(self, item: OutboxItem) -> None: ...


class OutboxWorker:
    def __init__(
        self,
        outbox: Outbox,
        reconciliation: ReconciliationQueue,
        destinations: Sequence[Destination],
        *,
        retry_initial: float,
        retry_max: float,
        stable_seconds: float = 0.0,
        metrics: GatewayMetrics | None = None,
        poll_seconds: float = 1.0,
        holder: str | None = None,
        lease_seconds: float = 30.0,
    ) -> None:
        self.outbox = outbox
        self.reconciliation = reconciliation
        self.destinations = list(destinations)
        self.kinds = tuple(dict.fromkeys(k for d in self.destinations for k in d.kinds))
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.stable_seconds = stable_seconds
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self.holder = holder or f"{socket.gethostname()}/{os.getpid()}"
        self.lease_seconds = lease_seconds
        self._lease_deadline = 0.0  # monotonic: the claimed batch's leases count as held until then
        self._paused: dict[str, float] = {}  # destination -> monotonic time it may be tried again
        self._unreachable: set[str] = set()  # destinations whose failure was logged (logged again when back)
        self._wake = asyncio.Event()
        self._gauges_at = 0.0

    def notify(self) -> None:
        """Look for due messages now (new ones were queued)."""
        self._wake.set()

    def wake(self) -> None:
        """Look for due messages now, paused destinations included (an administrator asked for a retry)."""
        self._paused.clear()
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                attempted = await self.run_once()
                await self.refresh_gauges()
            except asyncio.CancelledError:
                raise
            except Exception:  # the worker outlives any failure (the index unreachable...)
                log.exception("the outbox worker failed; trying again")
                attempted = 0
            if not attempted:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self._idle_wait())
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()

    def _idle_wait(self) -> float:
        now = time.monotonic()
        pauses = [until - now for until in self._paused.values() if until > now]
        return max(0.05, min([self.poll_seconds, *pauses]))

    def _targets(self, kind: str) -> list[Destination]:
        return [d for d in self.destinations if kind in d.kinds]

    def _paused_now(self) -> dict[str, float]:
        """Paused destinations and the seconds until each may be tried again."""
        now = time.monotonic()
        return {name: until - now for name, until in self._paused.items() if until > now}

    def _open_kinds(self) -> list[str]:
        """Kinds with a destination not paused: each destination of a kind is tried on its own."""
        paused = self._paused_now()
        return [k for k in self.kinds if any(d.name not in paused for d in self._targets(k))]

    async def run_once(self) -> int:
        """Deliver the messages due now (at most a batch); how many were attempted."""
        kinds = self._open_kinds()
        if not kinds:
            return 0
        asked = time.monotonic()
        items = await asyncio.to_thread(self.outbox.claim, kinds, self.holder, limit=BATCH, lease_seconds=self.lease_seconds)
        held = {item.pk for item in items}
        self._lease_deadline = asked + self.lease_seconds * 2 / 3
        renewing = asyncio.create_task(self._keep_leases(held)) if items else None
        attempted = 0
        under_way: int | None = None
        try:
            for item in items:
                if time.monotonic() >= self._lease_deadline:  # not renewed (the index not answering): maybe another's
                    log.warning("outbox leases not renewed in time; %d message(s) left to other workers", len(held))
                    break
                if item.pk not in held or item.kind not in self._open_kinds():  # lease lost / a destination went down
                    continue
                under_way = item.pk
                await self._deliver(item)
                held.discard(item.pk)
                under_way = None
                attempted += 1
        finally:
            if renewing is not None:
                renewing.cancel()
            # Not tried: anyone may take them at once. A message cut off under way (a stop) keeps its lease until it
            # runs out: the EMR may have taken it already, and another worker sending it at once would double it.
            if under_way is not None:
                held.discard(under_way)
            if held:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.outbox.release, sorted(held), self.holder)
        return attempted

    async def _keep_leases(self, held: set[int]) -> None:
        """Renew the batch's leases while it is delivered; a message whose lease was lost is not tried."""
        while held:
            await asyncio.sleep(self.lease_seconds / 3)
            asked = time.monotonic()
            try:
                still = await asyncio.to_thread(self.outbox.renew, sorted(held), self.holder, self.lease_seconds)
                self._lease_deadline = asked + self.lease_seconds * 2 / 3
            except Exception as exc:
                log.warning("outbox leases not renewed (%s)", type(exc).__name__)
                continue
            for pk in held - still:
                log.warning("outbox row %d: lease lost (another worker may deliver it)", pk)
            held &= still

    async def _deliver(self, item: OutboxItem) -> None:
        """Try every destination of the message that has not taken it yet: one down, refusing or waiting for
        reconciliation (FHIR) does not hold back another (a report still goes out as ORU^R01)."""
        started = dt.datetime.now(dt.timezone.utc)
        targets = self._targets(item.kind)
        several = len(targets) > 1
        done = await asyncio.to_thread(self.outbox.acceptances, item.pk) if several else set()
        paused = self._paused_now()
        failures: list[tuple[str, DeliveryError | Parked, float]] = []  # destination, why, retry in seconds
        for destination in targets:
            name = destination.name
            if name in done:
                continue
            if name in paused:
                failures.append((name, _WAITING, paused[name]))
                continue
            try:
                await destination.deliver(item)
            except Parked as exc:
                failures.append((name, exc, self.retry_max))
                log.info("outbox row %d (%s) waits for reconciliation item %d", item.pk, item.kind, exc.reconciliation_id)
                continue
            except DeliveryError as exc:
                failures.append((name, exc, self._pause_if_down(name, exc, item)))
                continue
            except Exception as exc:
                log.exception("outbox row %d (%s): delivery to %s failed", item.pk, item.kind, name)
                error = DeliveryError(f"{name}: internal error ({type(exc).__name__})")
                failures.append((name, error, self._pause_if_down(name, error, item)))
                continue
            if several:
                await asyncio.to_thread(self.outbox.accepted, item.pk, name)
            if name in self._unreachable:
                self._unreachable.discard(name)
                log.info("EMR destination %s reachable again", name)
        if failures:
            await self._failed(item, failures, started)
            return
        if not await asyncio.to_thread(self.outbox.delivered, item.pk, payload_json=item.payload_json):
            log.info("outbox row %d (%s) changed while being delivered; delivering it again", item.pk, item.kind)
            await asyncio.to_thread(self.outbox.release, [item.pk], self.holder)
            return
        log.info("outbox row %d (%s) delivered after %d attempt(s)", item.pk, item.kind, item.attempts + 1)
        if self.metrics:
            self.metrics.emr_delivered.labels(item.kind).inc()
            if item.kind == IMAGING_STUDY and "study_updated_at" in item.payload:
                stable_at = dt.datetime.fromisoformat(item.payload["study_updated_at"]) + dt.timedelta(seconds=self.stable_seconds)
                lag = (dt.datetime.now(dt.timezone.utc) - stable_at).total_seconds()
                self.metrics.emr_publication_lag.observe(max(lag, 0.0))

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt after ``attempts`` earlier failures (this one not counted)."""
        base = min(self.retry_initial * 2 ** min(attempts, 30), self.retry_max)
        return min(base * random.uniform(0.8, 1.2), self.retry_max)

    def _pause_if_down(self, destination: str, exc: DeliveryError, item: OutboxItem) -> float:
        """Seconds before the message is tried again at this destination; one that is down is paused that long."""
        delay = self.retry_max if exc.permanent else self.backoff(item.attempts)
        if exc.unavailable:
            self._paused[destination] = time.monotonic() + delay
            if destination not in self._unreachable:
                self._unreachable.add(destination)
                log.warning("EMR destination %s unavailable (%s); messages wait", destination, exc)
        return delay

    async def _failed(self, item: OutboxItem, failures: list[tuple[str, DeliveryError | Parked, float]], started: dt.datetime) -> None:
        """Schedule the message again for the soonest of its destinations that did not take it."""
        tried = any(exc is not _WAITING for _, exc, _ in failures)  # not only destinations paused meanwhile
        if self.metrics and any(exc is not _WAITING and not isinstance(exc, Parked) for _, exc, _ in failures):
            self.metrics.emr_failures.labels(item.kind).inc()
        delay = min(seconds for _, _, seconds in failures)
        error = "; ".join(f"{name}: unavailable, waiting" if exc is _WAITING else str(exc) for name, exc, _ in failures)
        await self._retry(item, error, delay, started, counted=tried)
        log.info("outbox row %d (%s) not delivered, attempt %d: %s; next in %.1f s", item.pk, item.kind, item.attempts + 1, error, delay)

    async def _retry(self, item: OutboxItem, error: str, delay: float, started: dt.datetime, *, counted: bool = True) -> None:
        retry_at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=delay)
        await asyncio.to_thread(
            self.outbox.failed, item.pk, error, retry_at=retry_at, attempted_at=started, counted=counted, holder=self.holder
        )

    async def refresh_gauges(self, *, force: bool = False) -> None:
        if not self.metrics or (not force and time.monotonic() - self._gauges_at < GAUGE_SECONDS):
            return
        self._gauges_at = time.monotonic()
        count, oldest = await asyncio.to_thread(self.outbox.backlog, self.kinds)
        open_items = await asyncio.to_thread(self.reconciliation.open_count)
        age = (dt.datetime.now(dt.timezone.utc) - oldest).total_seconds() if oldest else 0.0
        self.metrics.emr_pending.set(count)
        self.metrics.emr_oldest_pending.set(max(age, 0.0))
        self.metrics.emr_reconciliation.set(open_items)
