"""Filing the spool of a node that is never coming back into this gateway's object store and index.

The spool is opened as its own gateway would open it (its lock, its
checkpoint, its damaged records set aside) and read to the end; each batch is
filed by the spool worker's rules (duplicates told apart, unreadable records
kept in its dead-letter folder) and the checkpoint moves past it, so a drain
cut short and run again files only what is left.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.ingest.committer import Committer
from gateway.ingest.spool import SpoolLog, SpoolRecord
from gateway.ingest.worker import file_records
from storage.index.database import IndexDatabaseError
from storage.object_store.base import ObjectStoreError

log = logging.getLogger(__name__)

_BATCH_BYTES = 256 * 1024 * 1024
_ATTEMPTS = 5


class NotASpool(Exception):
    """The directory holds no spool."""


@dataclass
class DrainSummary:
    """Instances filed and found already filed, records set aside (damaged, or unreadable), and why the drain
    stopped early when it did (what is left stays in the spool, past the checkpoint)."""

    filed: int = 0
    duplicates: int = 0
    set_aside: int = 0
    stopped: str | None = None

    @property
    def complete(self) -> bool:
        return self.stopped is None and self.set_aside == 0


def open_spool(directory: Path, *, segment_bytes: int) -> SpoolLog:
    """The spool in ``directory``; NotASpool when there is none, SpoolLocked when a live process has it open."""
    if not directory.is_dir():
        raise NotASpool(f"{directory} is not a directory")
    if not any(directory.glob("seg-*.log")) and not (directory / "checkpoint").exists():
        raise NotASpool(f"{directory} holds no spool (no seg-*.log segment, no checkpoint)")
    return SpoolLog(directory, segment_bytes=segment_bytes, max_bytes=0, min_free_bytes=0).open()


def drain(spool: SpoolLog, committer: Committer, *, batch_instances: int, retry_seconds: float = 0.5) -> DrainSummary:
    """File every record of ``spool``; a batch that cannot be filed is tried a few times, then the drain stops."""
    summary = DrainSummary()
    while True:
        records = spool.read_batch(batch_instances, _BATCH_BYTES)
        if not records:
            break
        if not _file(spool, committer, records, summary, retry_seconds):
            spool.rewind(records)
            break
    summary.set_aside += spool.damaged_records
    return summary


def _file(spool: SpoolLog, committer: Committer, records: list[SpoolRecord], summary: DrainSummary, retry: float) -> bool:
    for attempt in range(_ATTEMPTS):
        try:
            filed = file_records(spool, committer, records)
        except (ObjectStoreError, IndexDatabaseError, OSError) as exc:
            summary.stopped = f"storing failed: {exc}"
            if attempt < _ATTEMPTS - 1:
                log.warning("filing spooled instances failed (%s); retrying", exc)
                time.sleep(retry * 2**attempt)
            continue
        summary.stopped = None
        summary.filed += filed.stored
        summary.duplicates += filed.duplicates
        summary.set_aside += filed.set_aside
        return True
    return False
