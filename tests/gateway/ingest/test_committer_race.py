"""Two nodes filing the same SOP Instance UIDs at once leave whole objects, each indexed once with its checksum."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from gateway.ingest.committer import Committer, Outcome
from gateway.ingest.instance import ReceivedInstance, parse_instance
from storage.index.database import IndexDatabase, IndexDatabaseError
from storage.object_store.base import ObjectStore, ObjectStoreError
from storage.object_store.local import LocalObjectStore
from storage.object_store.s3 import S3ObjectStore
from tests.factory import ct_series, to_bytes

INSTANCES = 12
ROUNDS = 3


def _instances(series: list[Dataset], variant: int) -> list[ReceivedInstance]:
    out = []
    for ds in series:
        copy = Dataset(ds)
        copy.file_meta = ds.file_meta
        if variant:  # the same UIDs, other pixels: another node's different bytes
            copy.PixelData = bytes((b + variant) % 256 for b in ds.PixelData)
            copy.ImageComments = "re-sent" * variant  # another size too, so a record of one beside the other's object shows
        out.append(parse_instance(to_bytes(copy)))
    return out


def _stores(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[], ObjectStore]:
    if kind == "local":
        root = tmp_path / "objects"
        return lambda: LocalObjectStore(root)  # one store per node, as two processes sharing the directory
    server = request.getfixturevalue("s3_server")
    bucket = f"race-{uuid.uuid4().hex[:10]}"
    conditional = False if kind == "s3-fallback" else None  # s3-fallback: as a server that ignores If-None-Match

    def make() -> ObjectStore:
        store = S3ObjectStore(
            server.endpoint, bucket, server.access_key, server.secret_key,
            secure=False, region=server.region, conditional_put=conditional,
        )  # fmt: skip
        store.ensure_bucket()
        if kind == "s3-multipart":  # as objects above 5 GiB: multipart uploads, which cannot carry If-None-Match
            store.single_put_limit = 1024
        return store

    return make


def _commit_retrying(committer: Committer, batch: list[ReceivedInstance]) -> list[Outcome]:
    """As the spool worker does: a batch that failed is done again whole."""
    for _ in range(10):
        try:
            return committer.commit(batch)
        except (IndexDatabaseError, ObjectStoreError):
            continue
    raise AssertionError("the batch never went through")


@pytest.mark.parametrize("kind", ["local", "s3", "s3-fallback", "s3-multipart"])
@pytest.mark.parametrize("same_bytes", [True, False], ids=["same-bytes", "different-bytes"])
@pytest.mark.parametrize("mode", ["keep_first", "replace"])
def test_two_nodes_file_the_same_uids_at_once(
    kind: str, same_bytes: bool, mode: Literal["keep_first", "replace"], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    make_store = _stores(kind, tmp_path, request)
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    IndexDatabase.open(url).close()
    nodes = []
    for _ in range(2):  # each node its own store client, index connection pool and upload threads
        store, index = make_store(), IndexDatabase.open(url)
        nodes.append((store, index, Committer(store, index, on_duplicate=mode, upload_concurrency=4)))
    reader = nodes[0][0]
    try:
        for _ in range(ROUNDS):
            series = ct_series(INSTANCES, size=64)
            batches = [_instances(series, 0), _instances(series, 0 if same_bytes else 7)]
            barrier = threading.Barrier(2)
            outcomes: list[list[Outcome]] = [[], []]

            def node(n: int, batches: list[list[ReceivedInstance]] = batches, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                outcomes[n] = _commit_retrying(nodes[n][2], batches[n])

            threads = [threading.Thread(target=node, args=(n,)) for n in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            candidates = [{i.record.object_key: bytes(i.data) for i in batch} for batch in batches]
            rows = {r["sop_instance_uid"]: r for r in nodes[1][1].all_instances()}
            for k, ds in enumerate(series):
                row = rows[ds.SOPInstanceUID]  # indexed (the UID is unique in the index: exactly once)
                stored = reader.get(row["object_key"])
                assert stored in (candidates[0][row["object_key"]], candidates[1][row["object_key"]])  # whole, not mixed
                assert row["size"] == len(stored)  # the index describes the object it names
                assert row["checksum"] == hashlib.sha256(stored).hexdigest()
                if mode == "keep_first" and reader.create_only and kind != "s3-multipart":  # else both may have written
                    firsts = [o[k] for o in outcomes].count(Outcome.STORED)
                    assert firsts == 1, [o[k] for o in outcomes]  # one node filed it, the other found it there
        assert nodes[1][1].instance_count() == ROUNDS * INSTANCES
    finally:
        for _, index, committer in nodes:
            committer.close()
            index.close()


def test_a_key_taken_by_a_writer_that_died_before_indexing_is_indexed_by_the_next(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    index = IndexDatabase.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
    [item] = _instances(ct_series(1, size=16), 0)
    store.put(item.record.object_key, item.data)  # the object made durable, the index commit never came
    store.flush()
    committer = Committer(store, index, on_duplicate="keep_first", upload_concurrency=1)
    try:
        assert committer.commit([item]) == [Outcome.DUPLICATE]
        [row] = index.all_instances()
        assert row["checksum"] == hashlib.sha256(item.data).hexdigest()
    finally:
        committer.close()
        index.close()


def _orphan(tmp_path: Path, grace: float) -> tuple[LocalObjectStore, IndexDatabase, ReceivedInstance, ReceivedInstance, Committer]:
    """The key holds another sender's bytes, never indexed (its writer died, or its index commit failed)."""
    store = LocalObjectStore(tmp_path / "objects")
    index = IndexDatabase.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
    series = ct_series(1, size=16)
    [first], [other] = _instances(series, 0), _instances(series, 3)
    store.put(first.record.object_key, first.data)
    store.flush()
    committer = Committer(store, index, on_duplicate="keep_first", upload_concurrency=1, orphan_grace_seconds=grace)
    return store, index, first, other, committer


def _commit_until_filed(committer: Committer, batch: list[ReceivedInstance], timeout: float = 30.0) -> list[Outcome]:
    """As the spool worker does: the batch is retried (here without backoff) until it goes through."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return committer.commit(batch)
        except ObjectStoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_an_unindexed_object_with_other_bytes_is_replaced_after_the_grace_period(tmp_path: Path) -> None:
    store, index, first, other, committer = _orphan(tmp_path, grace=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(ObjectStoreError, match="wait for the writer"):  # its writer may still be filing it
            committer.commit([other])
        assert index.instance_count() == 0 and store.get(first.record.object_key) == bytes(first.data)
        assert _commit_until_filed(committer, [other]) == [Outcome.STORED]  # nobody indexed it: ours goes in
        assert time.monotonic() - started >= 1.0
        [row] = index.all_instances()
        stored = store.get(other.record.object_key)
        assert stored == bytes(other.data)  # ours was acknowledged and is never dropped
        assert row["checksum"] == hashlib.sha256(stored).hexdigest() and row["size"] == len(stored)
        # The orphan's own writer files it later (its spool): ours is indexed first, and kept.
        late = Committer(store, index, on_duplicate="keep_first", upload_concurrency=1)
        try:
            assert late.commit([first]) == [Outcome.DUPLICATE]
        finally:
            late.close()
        [row] = index.all_instances()
        assert row["checksum"] == hashlib.sha256(store.get(row["object_key"])).hexdigest() == hashlib.sha256(other.data).hexdigest()
    finally:
        committer.close()
        index.close()


def test_an_unindexed_object_its_writer_indexes_within_the_grace_period_is_kept(tmp_path: Path) -> None:
    store, index, first, other, committer = _orphan(tmp_path, grace=60.0)
    writer = Committer(store.writer(), index, on_duplicate="keep_first", upload_concurrency=1)  # another filer
    outcomes: list[Outcome] = []
    try:
        filing = threading.Thread(target=lambda: outcomes.extend(_commit_until_filed(committer, [other])))
        filing.start()
        assert writer.commit([first]) == [Outcome.DUPLICATE]  # its writer's spool files it: the same bytes, indexed
        filing.join(30)
        assert outcomes == [Outcome.DUPLICATE]
        [row] = index.all_instances()
        assert store.get(row["object_key"]) == bytes(first.data)
        assert row["checksum"] == hashlib.sha256(first.data).hexdigest()
    finally:
        writer.close()
        committer.close()
        index.close()


def test_a_replay_on_a_store_without_create_only_puts_makes_object_and_index_agree(s3_server, tmp_path: Path) -> None:
    store = S3ObjectStore(
        s3_server.endpoint, f"replay-{uuid.uuid4().hex[:10]}", s3_server.access_key, s3_server.secret_key,
        secure=False, region=s3_server.region, conditional_put=False,
    )  # fmt: skip
    store.ensure_bucket()
    index = IndexDatabase.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
    series = ct_series(1, size=16)
    [first], [other] = _instances(series, 0), _instances(series, 3)
    committer = Committer(store, index, on_duplicate="keep_first", upload_concurrency=1)
    try:
        assert committer.commit([first]) == [Outcome.STORED]
        # Another node's write without the condition landed after; it died before comparing (its spool replays).
        store.put(other.record.object_key, other.data, sha256=hashlib.sha256(other.data).hexdigest())
        assert committer.commit([other]) == [Outcome.DUPLICATE]
        [row] = index.all_instances()
        stored = store.get(row["object_key"])
        assert row["checksum"] == hashlib.sha256(stored).hexdigest() and row["size"] == len(stored)
    finally:
        committer.close()
        index.close()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
@pytest.mark.parametrize("mode", ["keep_first", "replace"])
def test_one_uid_filed_under_two_studies_at_once_is_indexed_once_with_one_object(
    database: str, mode: Literal["keep_first", "replace"], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database(f"idx_{uuid.uuid4().hex[:10]}")
    IndexDatabase.open(url).close()
    root = tmp_path / "objects"
    nodes = []
    for _ in range(2):
        store, index = LocalObjectStore(root), IndexDatabase.open(url)
        nodes.append((store, index, Committer(store, index, on_duplicate=mode, upload_concurrency=4)))
    try:
        for _ in range(ROUNDS):
            series = ct_series(INSTANCES, size=16)
            moved = []
            for ds in series:  # the same SOP Instance UIDs, sent again under other study and series UIDs
                copy = Dataset(ds)
                copy.file_meta = ds.file_meta
                copy.StudyInstanceUID, copy.SeriesInstanceUID = generate_uid(), generate_uid()
                moved.append(copy)
            batches = [[parse_instance(to_bytes(ds)) for ds in series], [parse_instance(to_bytes(ds)) for ds in moved]]
            barrier = threading.Barrier(2)

            def node(n: int, batches: list[list[ReceivedInstance]] = batches, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                _commit_retrying(nodes[n][2], batches[n])

            threads = [threading.Thread(target=node, args=(n,)) for n in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        rows = nodes[0][1].all_instances()
        assert len(rows) == ROUNDS * INSTANCES
        assert sorted(r["object_key"] for r in rows) == nodes[0][0].list_keys()  # no object the index does not name
        for row in rows:
            stored = nodes[0][0].get(row["object_key"])
            assert row["checksum"] == hashlib.sha256(stored).hexdigest()
    finally:
        for _, index, committer in nodes:
            committer.close()
            index.close()
