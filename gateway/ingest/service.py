"""The one ingest entry point: C-STORE, STOW-RS and import offer an instance's bytes and get a StoreOutcome.

An instance is validated, put through the de-identification rules and handed
to a sink: the spool for the receivers (durable before Success is answered),
a batch filed directly for the import command. The protocol adapters turn the
outcome into their own answer; nothing here knows DIMSE or HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from gateway.ingest import spool_record
from gateway.ingest.instance import InstanceRejected, ReceivedInstance
from gateway.ingest.outcome import StoreOutcome
from gateway.ingest.rules_stage import Quarantined
from gateway.ingest.spool import SpoolFull, SpoolLog
from gateway.ingest.spool_record import SpooledInstance
from gateway.metrics import GatewayMetrics
from gateway.statuses import StoreStatus

log = logging.getLogger(__name__)

_OPERATION = {"dimse": "C-STORE", "stow": "STOW-RS", "import": "import"}


@dataclass(frozen=True)
class Source:
    """Who offers an instance: the protocol ("dimse", "stow" or "import"), the calling AE title the rules see,
    the peer's address, and for C-STORE the SOP Class and Instance UIDs its command names."""

    protocol: str
    calling_ae: str
    peer: str
    sop_class: str | None = None
    sop_instance: str | None = None


class Sink(Protocol):
    """Where an accepted instance goes; ``put`` returns once it is durable, or raises SpoolFull or OSError."""

    def put(self, instance: SpooledInstance, data: bytes | bytearray | memoryview) -> None: ...


class SpoolSink:
    """The durable spool, in the spool record format the spool worker (and ``spool drain``) read back."""

    def __init__(self, spool: SpoolLog) -> None:
        self.spool = spool

    def put(self, instance: SpooledInstance, data: bytes | bytearray | memoryview) -> None:
        self.spool.append(spool_record.encode(instance), data)


class IngestService:
    """Validates, applies the rules and hands the instance to the sink; Success only once the sink has it durably.

    ``accept`` runs the work in a pool of threads of its own (validation is CPU, the spool waits for the disk);
    ``store`` is the same, synchronously, for callers that are threads already (the import command)."""

    def __init__(
        self,
        receive: Callable[..., ReceivedInstance | Quarantined],
        sink: Sink,
        metrics: GatewayMetrics | None = None,
        *,
        threads: int = 4,
    ) -> None:
        self.receive = receive  # validates, applies the rules (RulesStage.receive)
        self.sink = sink
        self.metrics = metrics
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="ingest")

    async def accept(self, data: bytes | bytearray, source: Source) -> StoreOutcome:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.store, data, source)

    def close(self) -> None:
        """Let stores under way finish (before the spool closes)."""
        self._pool.shutdown(wait=True)

    def store(self, data: bytes | bytearray, source: Source) -> StoreOutcome:
        started = time.perf_counter()
        try:
            instance = self.receive(
                data,
                source_ae=source.calling_ae,
                peer=source.peer,
                affected_sop_class=source.sop_class,
                affected_sop_instance=source.sop_instance,
            )
        except InstanceRejected as rejected:
            return self._refuse(source, rejected.status, rejected.reason, rejected.offending_tag)
        except Exception as exc:  # never let a failure look like Success; its message may quote values
            return self._refuse(source, StoreStatus.CANNOT_UNDERSTAND, f"cannot decode dataset ({type(exc).__name__})")
        if isinstance(instance, Quarantined):
            log.warning("%s from %s (%s) quarantined by %s", _operation(source), source.calling_ae, source.peer, instance.reason[:64])
            if self.metrics:
                self.metrics.quarantined.inc()
            return StoreOutcome(StoreStatus.SUCCESS, quarantined=True)
        spooled = SpooledInstance(instance.record, instance.vault, source.calling_ae, source.peer, time.time())
        try:
            self.sink.put(spooled, instance.data)
        except SpoolFull as full:
            return self._refuse(source, StoreStatus.OUT_OF_RESOURCES, f"gateway spool full: {full}")
        except OSError as exc:
            log.error("spool write failed: %s", exc.strerror or exc)
            return self._refuse(source, StoreStatus.OUT_OF_RESOURCES, "gateway could not write the instance durably")
        if self.metrics:
            self.metrics.received.labels(source.protocol).inc()
            self.metrics.ack_latency.observe(time.perf_counter() - started)
        return StoreOutcome(StoreStatus.SUCCESS, record=instance.record)

    def _refuse(self, source: Source, status: StoreStatus, reason: str, offending_tag: int | None = None) -> StoreOutcome:
        reason = reason[:64]
        log.warning("%s from %s (%s) refused: %s", _operation(source), source.calling_ae, source.peer, reason)
        if self.metrics:
            self.metrics.rejected.labels(reason).inc()
        return StoreOutcome(status, reason, offending_tag)


def _operation(source: Source) -> str:
    return _OPERATION.get(source.protocol, source.protocol)
