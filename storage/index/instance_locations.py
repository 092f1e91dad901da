"""Where each instance of a series lies in the object store, kept in memory while the index says it is unchanged.

A frame request needs a few columns of its instance (object key, checksum,
transfer syntax, pixel data offset, frame length, number of frames). A
viewer asks for the frames of a series one instance after another, so on a
miss the whole series is read in one query and kept.

Kept rows are exact, never stale, on SQLite: a counter row
(``instance_changes``) is incremented by triggers on every insert, update or
delete of ``studies``, ``series``, ``instances`` and ``instance_pixels``,
whoever makes it (this process, another worker, a tool). A kept series is
served only while the counter still has the value read before its query.
Reading the counter takes a statement, so it is read only when SQLite's
``data_version`` (storage.index.commit_watch, no statement) shows that
something was committed at all; commits that touch none of those tables (the
audit trail, tokens) leave the kept rows valid.

On PostgreSQL nothing is kept: another node may replace an instance at any
moment and there is no counter this process can read without a round trip
to the server, which would cost what the cache saves; a time-to-live would
serve a replaced instance's old location for that long.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from storage.index.commit_watch import COUNTER_TABLE, CommitWatch
from storage.index.database import IndexDatabase


class InstanceLocations:
    """Per-process memory of the frame-location rows of recently read series, valid while the index is unchanged.

    ``cached`` answers from memory only (an event loop may call it); ``load`` queries (run it in a thread).
    At most ``max_series`` series are kept, the least recently used dropped first."""

    def __init__(self, index: IndexDatabase, watch: CommitWatch, max_series: int = 64) -> None:
        self.index = index
        self.watch = watch
        self.max_series = max_series
        self._series: OrderedDict[tuple[str, str], tuple[int, dict[str, dict[str, Any]]]] = OrderedDict()
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None  # (data_version, counter) read together, counter after version
        self.hits = 0
        self.loads = 0

    @property
    def enabled(self) -> bool:
        return self.watch.version() is not None

    def _counter(self) -> int | None:
        """The counter now: read again only when data_version moved since it was last read."""
        version = self.watch.version()
        if version is None:
            return None
        seen = self._seen
        if seen is not None and seen[0] == version:
            return seen[1]
        changes = self.watch.changes(COUNTER_TABLE)
        if changes is None:
            return None
        self._seen = (version, changes)  # the counter read after the version: a commit in between moves the version
        return changes

    def cached(self, study_uid: str, series_uid: str) -> dict[str, dict[str, Any]] | None:
        """The series' rows by SOP Instance UID if kept and still exact; else None."""
        if not self._series:
            return None
        changes = self._counter()
        key = (study_uid, series_uid)
        with self._lock:
            kept = self._series.get(key)
            if kept is None or changes is None or kept[0] != changes:
                return None
            self._series.move_to_end(key)
            self.hits += 1
            return kept[1]

    def load(self, study_uid: str, series_uid: str) -> dict[str, dict[str, Any]]:
        """Query the series' rows (no metadata) and keep them, tagged with the counter read before the query."""
        changes = self.watch.changes(COUNTER_TABLE) if self.watch.version() is not None else None
        rows = self.index.instance_documents(study_uid, series_uid, None, with_metadata=False)
        by_uid = {row["sop_instance_uid"]: row for row in rows}
        if changes is not None and rows:
            with self._lock:
                self.loads += 1
                self._series[(study_uid, series_uid)] = (changes, by_uid)
                self._series.move_to_end((study_uid, series_uid))
                while len(self._series) > self.max_series:
                    self._series.popitem(last=False)
        return by_uid
