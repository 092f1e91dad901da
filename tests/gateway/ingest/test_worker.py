"""The spool worker outlives failures and files everything once they pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.ingest.committer import Committer
from gateway.ingest.instance import parse_instance
from gateway.ingest.spool import SpoolLog
from gateway.ingest.worker import SpoolWorker
from gateway.metrics import GatewayMetrics
from storage.index.database import IndexDatabase
from storage.object_store.local import LocalObjectStore
from tests.factory import ct_series, to_bytes


class FlakyStore(LocalObjectStore):
    """A real local store whose first writes fail the way a bug or a library surprise would."""

    def __init__(self, root: Path, failures: list[Exception]) -> None:
        super().__init__(root)
        self.failures = failures

    def put(self, key: str, data: bytes, content_type: str = "application/dicom", **options: Any) -> bool:  # type: ignore[override]
        if self.failures:
            raise self.failures.pop(0)
        return super().put(key, data, content_type, **options)


def test_worker_survives_unexpected_errors_and_files_everything(tmp_path: Path) -> None:
    metrics = GatewayMetrics()
    index = IndexDatabase.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
    store = FlakyStore(tmp_path / "objects", [RuntimeError("surprise"), ValueError("another")])
    spool = SpoolLog(tmp_path / "spool", segment_bytes=1 << 20, max_bytes=1 << 30, min_free_bytes=0).open()
    committer = Committer(store, index, on_duplicate="keep_first", upload_concurrency=2, metrics=metrics)
    worker = SpoolWorker(spool, committer, batch_instances=4, retry_initial=0.01, retry_max=0.05, metrics=metrics)
    series = ct_series(10, size=16)
    for ds in series:
        instance = parse_instance(to_bytes(ds))
        spool.append({"record": instance.record.to_dict()}, instance.data)
    worker.start()
    try:
        assert worker.wait_idle(timeout=20)
    finally:
        worker.stop()
        committer.close()
        spool.close()
    assert sorted(r["sop_instance_uid"] for r in index.all_instances()) == sorted(ds.SOPInstanceUID for ds in series)
    assert worker.last_error is None
    text = metrics.render().decode()
    [failures] = [line for line in text.splitlines() if line.startswith('pacsgw_store_batch_failures_total{component="internal"}')]
    assert float(failures.rsplit(" ", 1)[1]) >= 1  # both errors may fall in one batch
    assert "pacsgw_instances_stored_total 10.0" in text


def test_records_of_every_known_version_are_filed_a_newer_one_stays_and_an_unreadable_one_is_kept_whole(
    tmp_path: Path,
) -> None:
    import json

    import pytest

    from gateway.ingest import spool_record
    from gateway.ingest.spool_record import SpooledInstance, SpoolRecordTooNew
    from gateway.ingest.worker import file_records

    index = IndexDatabase.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
    spool = SpoolLog(tmp_path / "spool", segment_bytes=1 << 20, max_bytes=1 << 30, min_free_bytes=0).open()
    committer = Committer(LocalObjectStore(tmp_path / "objects"), index, on_duplicate="keep_first", upload_concurrency=2)
    current, older, broken, newer = (parse_instance(to_bytes(ds)) for ds in ct_series(4, size=16))
    meta = spool_record.encode(SpooledInstance(current.record, (), "CT1", "10.0.0.7", 1.5e9))
    assert spool_record.decode(meta) == SpooledInstance(current.record, (), "CT1", "10.0.0.7", 1.5e9)
    spool.append(meta, current.data)
    spool.append({"record": older.record.to_dict()}, older.data)  # written before records had a version
    spool.append({"v": 1, "record": {"not": "an instance"}}, broken.data)
    try:
        filed = file_records(spool, committer, spool.read_batch(10, 1 << 30))
        assert (filed.stored, filed.duplicates, filed.set_aside) == (2, 0, 1)
        assert sorted(r["sop_instance_uid"] for r in index.all_instances()) == sorted(
            [current.record.sop_instance_uid, older.record.sop_instance_uid]
        )
        kept = sorted((tmp_path / "spool" / "dead-letter").iterdir())
        assert [p.suffix for p in kept] == [".dcm", ".json"]  # the instance and its description, pseudonyms included
        assert kept[0].read_bytes() == bytes(broken.data) and json.loads(kept[1].read_text())["record"] == {"not": "an instance"}

        # A record of a newer gateway is neither filed nor set aside: it stays in the spool for a gateway that reads it.
        spool.append({**spool_record.encode(SpooledInstance(newer.record, (), "CT1", "", 0.0)), "v": 99}, newer.data)
        records = spool.read_batch(10, 1 << 30)
        with pytest.raises(SpoolRecordTooNew):
            file_records(spool, committer, records)
        spool.rewind(records)
        assert spool.backlog_records == 1 and len(kept) == len(list((tmp_path / "spool" / "dead-letter").iterdir()))
    finally:
        committer.close()
        spool.close()
