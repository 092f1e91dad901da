"""Both object store backends keep the same contract."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.object_store.base import ObjectExists, ObjectInfo, ObjectNotFound, ObjectStore, ObjectStoreError, sha256_hex
from storage.object_store.local import LocalObjectStore
from storage.object_store.s3 import PROBE_PREFIX, S3ObjectStore


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalObjectStore(tmp_path / "objects")
        return
    server = request.getfixturevalue("s3_server")
    s3 = S3ObjectStore(
        server.endpoint, f"store-{uuid.uuid4().hex[:10]}", server.access_key, server.secret_key,
        secure=False, region=server.region,
    )
    s3.ensure_bucket()
    yield s3


def test_put_get_list_delete(store: ObjectStore) -> None:
    store.check()
    key = "studies/1.2/series/1.3/instances/1.4.dcm"
    store.put(key, b"abc")
    store.flush()
    store.put(key, b"abcd")  # overwrite is whole
    store.flush()
    assert store.get(key) == b"abcd"
    assert store.exists(key)
    assert store.list_keys("studies/") == [key]
    store.delete(key)
    assert not store.exists(key)
    with pytest.raises(ObjectNotFound):
        store.get(key)


def test_local_store_leaves_no_partial_object(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    store = LocalObjectStore(root)
    store.put("studies/1/series/2/instances/3.dcm", b"not yet flushed")
    assert store.list_keys() == []  # nothing under a key before it is durable
    (root / ".incoming" / "crashed-write").write_bytes(b"half")
    LocalObjectStore(root)  # a restart clears what a crash left before its flush
    assert not (root / ".incoming" / "crashed-write").exists()
    assert store.list_keys() == []
    with pytest.raises(ObjectStoreError):
        store.put("../escape.dcm", b"x")


def test_wrong_credentials_are_an_error_not_a_success(s3_server) -> None:
    bad = S3ObjectStore(s3_server.endpoint, "nobucket", s3_server.access_key, "wrong-secret", secure=False)
    with pytest.raises(ObjectStoreError):
        bad.check()
    with pytest.raises(ObjectStoreError):
        bad.put("k", b"x")


def test_opening_a_local_store_never_removes_a_live_stores_writes(tmp_path: Path) -> None:
    """A command (import, anonymise) opening the store while the gateway runs must leave its batch alone."""
    import os
    import time

    from storage.object_store.local import LocalObjectStore

    running = LocalObjectStore(tmp_path)
    running.put("studies/1.2.3.4/series/1.2.3.4.5/instances/1.2.3.4.5.6.dcm", b"DICM" * 100)
    long_ago = time.time() - 3600
    for folder in (tmp_path / ".incoming").iterdir():
        os.utime(folder, (long_ago, long_ago))  # past the settling time: only the lock protects it
    abandoned = tmp_path / ".incoming" / "from-a-process-that-stopped"
    abandoned.mkdir()
    (abandoned / "half-written").write_bytes(b"x")
    os.utime(abandoned, (long_ago, long_ago))
    other = LocalObjectStore(tmp_path)  # a second process opening the same store
    running.flush()
    assert running.get("studies/1.2.3.4/series/1.2.3.4.5/instances/1.2.3.4.5.6.dcm") == b"DICM" * 100
    assert not abandoned.exists()
    assert other.list_keys() == ["studies/1.2.3.4/series/1.2.3.4.5/instances/1.2.3.4.5.6.dcm"]


def test_create_only_put_never_replaces(store: ObjectStore) -> None:
    key = "studies/1.2/series/1.3/instances/1.5.dcm"
    store.put(key, b"first", sha256=sha256_hex(b"first"), if_absent=True)
    assert store.flush() == set()
    try:
        store.put(key, b"second", if_absent=True)
        refused = store.flush()
    except ObjectExists:
        refused = {key}
    assert refused == {key}
    assert store.get(key) == b"first"
    assert store.info(key) == ObjectInfo(5, sha256_hex(b"first"))
    assert store.info("studies/none.dcm") is None
    assert store.create_only
    assert store.list_keys(".incoming") == [] and store.list_keys(PROBE_PREFIX) == []


def test_the_conformance_probe_finds_conditional_put_on_seaweedfs(s3_server) -> None:
    s3 = S3ObjectStore(
        s3_server.endpoint, f"probe-{uuid.uuid4().hex[:10]}", s3_server.access_key, s3_server.secret_key,
        secure=False, region=s3_server.region,
    )  # fmt: skip
    s3.ensure_bucket()
    assert s3.probe_conditional_put() is True
    assert s3.report() == {
        "create_only": True, "conformance": "If-None-Match: * honoured (412 on the second PUT)",
        "encryption": "not asked for",
    }
    assert s3.list_keys() == []  # the probe key is removed


def test_without_conditional_put_a_create_only_put_checks_first(s3_server) -> None:
    s3 = S3ObjectStore(
        s3_server.endpoint, f"probe-{uuid.uuid4().hex[:10]}", s3_server.access_key, s3_server.secret_key,
        secure=False, region=s3_server.region, conditional_put=False,
    )  # fmt: skip
    s3.ensure_bucket()
    assert not s3.create_only
    s3.put("a.dcm", b"first", if_absent=True)
    with pytest.raises(ObjectExists):
        s3.put("a.dcm", b"second", if_absent=True)
    assert s3.get("a.dcm") == b"first"


def _s3(server, bucket: str = "", **options) -> S3ObjectStore:
    return S3ObjectStore(
        server.endpoint, bucket or f"probe-{uuid.uuid4().hex[:10]}", server.access_key, options.pop("secret", server.secret_key),
        secure=False, region=server.region, connect_timeout=1, **options,
    )  # fmt: skip


def test_a_create_only_put_into_a_missing_bucket_creates_it_and_probes(s3_server) -> None:
    s3 = _s3(s3_server)  # the bucket was never made (the server was unreachable at start-up, or it was removed)
    assert s3.put("a.dcm", b"first", if_absent=True) is True  # probed, with the condition
    assert s3.create_only and s3.get("a.dcm") == b"first"
    with pytest.raises(ObjectExists):
        s3.put("a.dcm", b"second", if_absent=True)


def test_filing_recovers_when_s3_comes_up_after_the_gateway(tmp_path: Path) -> None:
    from gateway.ingest.committer import Committer, Outcome
    from gateway.ingest.instance import parse_instance
    from gateway.service import open_object_store
    from gateway.settings import load_settings
    from storage.index.database import IndexDatabase
    from tests.factory import ct_series, to_bytes
    from tests.peers.seaweedfs import run_seaweedfs

    with run_seaweedfs(tmp_path / "weed") as server:
        server.stop()  # down when the gateway starts: no bucket, no probe
        settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path / "data"), "storage": {"backend": "s3", "read_cache_bytes": 0}, "s3": {
            "endpoint": server.endpoint, "bucket": "late", "access_key": server.access_key,
            "secret_key": server.secret_key, "secure": False, "region": server.region, "connect_timeout": 1,
        }})  # fmt: skip
        store = open_object_store(settings)
        assert store.report()["conformance"] == "not probed yet"
        index = IndexDatabase.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
        committer = Committer(store, index, on_duplicate="keep_first", upload_concurrency=2)
        batch = [parse_instance(to_bytes(ds)) for ds in ct_series(3, size=16)]
        try:
            with pytest.raises(ObjectStoreError):
                committer.commit(batch)  # the worker keeps the batch in the spool and retries
            server.start()
            assert committer.commit(batch) == [Outcome.STORED] * 3
            assert store.create_only and index.instance_count() == 3
        finally:
            committer.close()
            index.close()


def test_a_probe_that_meets_another_error_decides_nothing(s3_server) -> None:
    s3 = _s3(s3_server, secret="not-the-secret")  # refused for its signature, as a 403, a 503 or a SlowDown would be
    with pytest.raises(ObjectStoreError):
        s3.probe_conditional_put()
    assert s3.report()["conformance"].startswith("undetermined")
    with pytest.raises(ObjectStoreError):  # still undetermined: the next create-only write probes again
        s3.put("a.dcm", b"x", if_absent=True)
    assert s3.report()["conformance"].startswith("undetermined")


def test_require_create_only_refuses_to_file_without_conditional_put(s3_server) -> None:
    s3 = _s3(s3_server, conditional_put=False, require_create_only=True)
    s3.ensure_bucket()
    with pytest.raises(ObjectStoreError, match="require_create_only") as refused:
        s3.put("a.dcm", b"x", if_absent=True)
    assert not isinstance(refused.value, ObjectExists) and not s3.exists("a.dcm")


def test_put_says_whether_the_write_was_create_only(s3_server, tmp_path: Path) -> None:
    s3 = _s3(s3_server)
    s3.ensure_bucket()
    assert s3.put("a.dcm", b"x" * 2000, if_absent=True) is True
    assert s3.put("a.dcm", b"y" * 2000) is False
    s3.single_put_limit = 1024  # as above 5 GiB: multipart, which cannot carry If-None-Match
    assert s3.put("b.dcm", b"z" * 2000, if_absent=True) is False
    local = LocalObjectStore(tmp_path / "objects")
    assert local.put("a.dcm", b"x", if_absent=True) is True and local.put("b.dcm", b"x") is False


def test_each_writer_of_a_local_store_flushes_and_answers_for_its_own_puts(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    first, second = store.writer(), store.writer()
    key = "studies/1.2/series/1.3/instances/1.6.dcm"
    first.put(key, b"first", if_absent=True)
    second.put(key, b"second", if_absent=True)
    assert second.flush() == set()  # the first writer's put is still its own, waiting for its flush
    assert store.get(key) == b"second"
    assert first.flush() == {key}  # refused, and told to the writer that made the put
    assert store.get(key) == b"second"
