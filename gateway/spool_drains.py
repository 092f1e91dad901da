"""Spools left by another configuration of the gateway, filed beside the live one until they are empty.

Changing ``serve.workers`` leaves spools no process writes to any more: from 2 workers
to 1, ``<spool>/worker-1``; from one process to several, the segments in ``<spool>``
itself. Worker 0 (or the one process) opens each that still holds instances and files
it with a filer of its own, and closes it once it is empty.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from gateway.ingest.committer import Committer
from gateway.ingest.spool import SpoolLog
from gateway.ingest.worker import SpoolWorker
from gateway.metrics import GatewayMetrics
from gateway.settings import Settings
from storage.index.database import IndexDatabase
from storage.object_store.base import ObjectStore

log = logging.getLogger(__name__)


def open_spool(
    settings: Settings, directory: Path, *, spares: int | None = None, cls: type[SpoolLog] = SpoolLog
) -> SpoolLog:
    sp = settings.spool
    return cls(
        directory,
        segment_bytes=sp.segment_bytes,
        max_bytes=sp.max_bytes,
        min_free_bytes=sp.min_free_bytes,
        preallocated_segments=sp.preallocated_segments if spares is None else spares,
    ).open()


def leftover_spools(settings: Settings, *, worker: int | None, workers: int) -> list[Path]:
    """Spools no process of this configuration writes to: those of workers beyond ``workers`` and, under the
    supervisor, the one-process spool's own segments. Worker 0 files them; the one process (``worker`` None)
    files every worker's."""
    root = settings.spool_path
    if worker not in (None, 0) or not root.is_dir():
        return []
    found = []
    if worker is not None and any(root.glob("seg-*.log")):
        found.append(root)
    for path in sorted(root.glob("worker-*")):
        index = path.name.removeprefix("worker-")
        if path.is_dir() and index.isdigit() and (worker is None or int(index) >= workers):
            found.append(path)
    return found


class Drains:
    """Files leftover spools (``leftover_spools``) beside the worker's own, each closed once empty."""

    def __init__(
        self, settings: Settings, store: ObjectStore, index: IndexDatabase, metrics: GatewayMetrics, directories: list[Path]
    ) -> None:
        self.settings = settings
        self.store = store
        self.index = index
        self.metrics = metrics
        self.spools: list[SpoolLog] = []
        self._workers: list[SpoolWorker] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._committers: list[Committer] = []
        self._lock = threading.Lock()
        for directory in directories:
            spool = open_spool(settings, directory, spares=0)
            if spool.backlog_records:
                log.info("filing %d instance(s) left in the spool %s", spool.backlog_records, directory.name)
                self.spools.append(spool)
            else:
                spool.close()

    def backlog(self) -> tuple[int, int]:
        with self._lock:
            return sum(s.backlog_records for s in self.spools), sum(s.backlog_bytes for s in self.spools)

    def start(self) -> None:
        if not self.spools:
            return
        sp = self.settings.spool
        for spool in self.spools:
            committer = Committer(  # one each, with a writer of its own: spools filed side by side share no batch
                self.store.writer(), self.index, on_duplicate=self.settings.ingest.on_duplicate,
                upload_concurrency=sp.upload_concurrency, orphan_grace_seconds=self.settings.ingest.orphan_grace_seconds,
                metrics=self.metrics,
            )
            self._committers.append(committer)
            worker = SpoolWorker(
                spool, committer, batch_instances=sp.batch_instances, retry_initial=sp.retry_initial_seconds,
                retry_max=sp.retry_max_seconds, metrics=self.metrics,
            )
            worker.start()
            self._workers.append(worker)
        self._thread = threading.Thread(target=self._run, name="spool-drains", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self._workers and not self._stop.wait(0.1):
            for worker in [w for w in self._workers if w.spool.backlog_records == 0]:
                self._close(worker)
                log.info("left-over spool %s filed", worker.spool.directory.name)

    def _close(self, worker: SpoolWorker) -> None:
        worker.stop()
        worker.spool.close()
        with self._lock:
            self._workers.remove(worker)
            self.spools.remove(worker.spool)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for worker in list(self._workers):
            self._close(worker)
        for spool in list(self.spools):
            spool.close()
        for committer in self._committers:
            committer.close()
