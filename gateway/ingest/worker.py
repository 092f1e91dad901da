"""The spool worker: moves spooled instances to the object store and the index, retrying with backoff."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.ingest.committer import Committer, Outcome
from gateway.ingest.instance import ReceivedInstance
from gateway.ingest.spool import SpoolLog, SpoolRecord
from gateway.ingest.spool_record import SpoolRecordError, decode
from gateway.metrics import GatewayMetrics
from storage.index.database import IndexDatabaseError
from storage.durable import fsync_dir
from storage.object_store.base import ObjectStoreError

log = logging.getLogger(__name__)

_BATCH_BYTES = 256 * 1024 * 1024


def _component(exc: Exception) -> str:
    if isinstance(exc, IndexDatabaseError):
        return "index"
    if isinstance(exc, ObjectStoreError):
        return "object_store"
    if isinstance(exc, OSError):
        return "spool"
    return "internal"


@dataclass
class Filed:
    """What filing a batch of spooled records did: instances stored, duplicates, records set aside."""

    stored: int = 0
    duplicates: int = 0
    set_aside: int = 0


def file_records(spool: SpoolLog, committer: Committer, records: list[SpoolRecord]) -> Filed:
    """Store and index spooled records, then move the spool's checkpoint past them; a record whose meta
    cannot be read is kept in the spool's dead-letter folder, not dropped (an operator decides)."""
    batch: list[ReceivedInstance] = []
    set_aside = 0
    for record in records:
        try:
            spooled = decode(record.meta)
        except SpoolRecordError as exc:
            _dead_letter(spool, record, str(exc))
            set_aside += 1
            continue
        batch.append(ReceivedInstance(spooled.record, record.data, spooled.vault))
    outcomes = committer.commit(batch)
    spool.commit(records)
    duplicates = sum(o is Outcome.DUPLICATE for o in outcomes)
    return Filed(len(outcomes) - duplicates, duplicates, set_aside)


def _dead_letter(spool: SpoolLog, record: SpoolRecord, why: str) -> None:
    """Keep the record whole (its instance and its description, pseudonym mappings included) and durably, before
    the checkpoint moves past it."""
    folder = Path(spool.directory) / "dead-letter"
    if not folder.exists():
        folder.mkdir()
        fsync_dir(Path(spool.directory))
    stem = f"{record.start.segment}-{record.start.offset}"
    for name, data in ((f"{stem}.dcm", bytes(record.data)), (f"{stem}.json", json.dumps(record.meta).encode())):
        with open(folder / name, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    fsync_dir(folder)
    log.error("a spooled record could not be read back (%s); kept as %s.dcm and .json", why, stem)


class SpoolWorker:
    """Files what the spool holds, in order, in batches; the one reader of its spool."""

    def __init__(
        self,
        spool: SpoolLog,
        committer: Committer,
        *,
        batch_instances: int,
        retry_initial: float,
        retry_max: float,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.spool = spool
        self.committer = committer
        self.batch_instances = batch_instances
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.metrics = metrics
        self.last_error: str | None = None
        self.linger = 0.05
        self._damage_counted = 0
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spool-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the spool is empty (for the import command and tests)."""
        deadline = time.monotonic() + timeout
        while self.spool.backlog_records and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.spool.backlog_records == 0

    def _run(self) -> None:
        delay = self.retry_initial
        while not self._stop.is_set():
            self._count_damage()
            if not self.spool.wait_for_records(timeout=0.5):
                continue
            if self.spool.backlog_records < self.batch_instances:
                # Gather a fuller batch: fewer index commits and syncs per instance.
                self._stop.wait(self.linger)
            records: list[SpoolRecord] = []
            try:
                records = self.spool.read_batch(self.batch_instances, _BATCH_BYTES)
                if records:
                    self._file(records)
            except Exception as exc:  # the worker must outlive any failure: retry with backoff
                self.spool.rewind(records)
                component = _component(exc)
                if self.metrics:
                    self.metrics.store_failures.labels(component).inc()
                if self.last_error is None:
                    if component == "internal":
                        log.exception("storing spooled instances failed; retrying with backoff")
                    else:
                        log.warning("storing spooled instances failed (%s); retrying with backoff", exc)
                self.last_error = f"{component}: {exc}" if str(exc) else component
                self._stop.wait(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            if self.last_error is not None:
                log.info("storing spooled instances works again")
            self.last_error = None
            delay = self.retry_initial

    def _count_damage(self) -> None:
        """Report damaged records the spool set aside (at start-up, or found while reading)."""
        damaged = self.spool.damaged_records
        if self.metrics and damaged > self._damage_counted:
            self.metrics.spool_damaged.inc(damaged - self._damage_counted)
        self._damage_counted = damaged

    def _file(self, records: list[SpoolRecord]) -> None:
        filed = file_records(self.spool, self.committer, records)
        if self.metrics:
            self.metrics.stored.inc(filed.stored)
            self.metrics.duplicates.inc(filed.duplicates)
