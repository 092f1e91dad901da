"""Draining another node's spool: everything filed once, a drain cut short goes on where it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.ingest import spool_record
from gateway.ingest.committer import Committer
from gateway.ingest.drain import NotASpool, drain, open_spool
from gateway.ingest.instance import parse_instance
from gateway.ingest.spool import SpoolLog
from gateway.ingest.spool_record import SpooledInstance
from storage.index.database import IndexDatabase
from storage.object_store.base import ObjectStoreError
from storage.object_store.local import LocalObjectStore
from tests.factory import ct_series, to_bytes


class DownStore(LocalObjectStore):
    """A real local store that is unreachable while ``down`` is set."""

    down = True

    def put(self, key: str, data: bytes, content_type: str = "application/dicom", **options: Any) -> None:  # type: ignore[override]
        if self.down:
            raise ObjectStoreError("connection refused")
        super().put(key, data, content_type, **options)


def test_a_drain_that_cannot_store_stops_and_the_next_one_files_everything_once(tmp_path: Path) -> None:
    spool_dir = tmp_path / "dead-node-spool"
    spool = SpoolLog(spool_dir, segment_bytes=1 << 20, max_bytes=1 << 30, min_free_bytes=0).open()
    series = ct_series(6, size=16)
    for ds in series:
        instance = parse_instance(to_bytes(ds))
        spool.append(spool_record.encode(SpooledInstance(instance.record, (), "CT1", "10.0.0.9", 1.0)), instance.data)
    spool.close()

    index = IndexDatabase.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
    store = DownStore(tmp_path / "objects")
    committer = Committer(store, index, on_duplicate="keep_first", upload_concurrency=2)
    try:
        first = open_spool(spool_dir, segment_bytes=1 << 20)
        stopped = drain(first, committer, batch_instances=4, retry_seconds=0.001)
        first.close()
        assert stopped.stopped and "connection refused" in stopped.stopped and stopped.filed == 0
        assert not stopped.complete

        store.down = False
        second = open_spool(spool_dir, segment_bytes=1 << 20)
        done = drain(second, committer, batch_instances=4)
        second.close()
        assert (done.filed, done.duplicates, done.set_aside, done.stopped) == (6, 0, 0, None) and done.complete
        third = open_spool(spool_dir, segment_bytes=1 << 20)
        assert drain(third, committer, batch_instances=4).filed == 0
        third.close()
    finally:
        committer.close()
    assert sorted(r["sop_instance_uid"] for r in index.all_instances()) == sorted(ds.SOPInstanceUID for ds in series)
    assert len(store.list_keys("studies/")) == 6


def test_a_folder_without_a_spool_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotASpool, match="holds no spool"):
        open_spool(tmp_path, segment_bytes=1 << 20)
    with pytest.raises(NotASpool, match="not a directory"):
        open_spool(tmp_path / "missing", segment_bytes=1 << 20)
    assert not (tmp_path / "missing").exists()
