"""Two nodes filing the same SOP Instance UIDs at once leave whole objects, each indexed once with its checksum."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
from pydicom.dataset import Dataset

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
    conditional = None if kind == "s3" else False  # s3-fallback: as a server that ignores If-None-Match

    def make() -> ObjectStore:
        store = S3ObjectStore(
            server.endpoint, bucket, server.access_key, server.secret_key,
            secure=False, region=server.region, conditional_put=conditional,
        )  # fmt: skip
        store.ensure_bucket()
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


@pytest.mark.parametrize("kind", ["local", "s3", "s3-fallback"])
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
                if mode == "keep_first" and reader.create_only:  # without conditional PUT both may have written
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


def test_different_bytes_under_a_taken_key_are_never_indexed_over_it(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    index = IndexDatabase.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
    series = ct_series(1, size=16)
    [first], [other] = _instances(series, 0), _instances(series, 3)
    store.put(first.record.object_key, first.data)
    store.flush()
    committer = Committer(store, index, on_duplicate="keep_first", upload_concurrency=1)
    try:
        assert committer.commit([other]) == [Outcome.DUPLICATE]
        assert index.instance_count() == 0  # the stored object's own writer indexes it when its spool is filed
        assert store.get(first.record.object_key) == bytes(first.data)
    finally:
        committer.close()
        index.close()
