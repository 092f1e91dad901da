"""The read cache in front of S3 serves an object only in the version the index names, within its byte bound."""

from __future__ import annotations

import uuid

import pytest

from storage.object_store.base import sha256_hex
from storage.object_store.cache import CachedObjectStore
from storage.object_store.s3 import S3ObjectStore


@pytest.fixture
def s3(s3_server) -> S3ObjectStore:
    store = S3ObjectStore(
        s3_server.endpoint, f"cache-{uuid.uuid4().hex[:10]}", s3_server.access_key, s3_server.secret_key,
        secure=False, region=s3_server.region,
    )  # fmt: skip
    store.ensure_bucket()
    return store


def _node(s3: S3ObjectStore, s3_server) -> S3ObjectStore:
    """Another node's client of the same bucket."""
    return S3ObjectStore(
        s3_server.endpoint, s3.bucket, s3_server.access_key, s3_server.secret_key, secure=False, region=s3_server.region
    )


def test_a_replacement_by_another_node_is_never_served_stale(s3: S3ObjectStore, s3_server) -> None:
    cache = CachedObjectStore(s3, max_bytes=1 << 20)
    old, new = b"A" * 1000, b"B" * 1000
    cache.put("k.dcm", old, sha256=sha256_hex(old))
    cache.flush()
    assert cache.get("k.dcm", version=sha256_hex(old)) == old
    assert cache.hits == 1  # written through: served from memory
    _node(s3, s3_server).put("k.dcm", new, sha256=sha256_hex(new))  # the index now names the new checksum
    assert cache.get("k.dcm", version=sha256_hex(new)) == new
    assert cache.get_range("k.dcm", 10, 5, version=sha256_hex(new)) == b"BBBBB"
    assert cache.get("k.dcm") == new  # no version (an older index row): the store itself


def test_ranges_delete_and_the_byte_bound(s3: S3ObjectStore) -> None:
    cache = CachedObjectStore(s3, max_bytes=4000)
    blobs = {f"{n}.dcm": bytes([n]) * 900 for n in range(6)}
    for key, data in blobs.items():
        s3.put(key, data)
    for key, data in blobs.items():
        assert cache.get_range(key, 100, 10, version=sha256_hex(data)) == data[100:110]
        assert cache.get(key, version=sha256_hex(data)) == data
    assert cache.cached_bytes <= 4000
    assert cache.get("5.dcm", version=sha256_hex(blobs["5.dcm"])) == blobs["5.dcm"]
    hits = cache.hits
    cache.delete("5.dcm")
    assert not s3.exists("5.dcm")
    with pytest.raises(Exception):
        cache.get("5.dcm", version=sha256_hex(blobs["5.dcm"]))
    assert cache.hits == hits
    big = b"x" * 1001  # more than a quarter of the bound: never kept
    s3.put("big.dcm", big)
    cache.get("big.dcm", version=sha256_hex(big))
    cache.get("big.dcm", version=sha256_hex(big))
    assert cache.report()["read_cache"]["bytes"] <= 4000 and cache.hits == hits


def test_a_refused_create_only_put_is_not_cached(s3: S3ObjectStore) -> None:
    cache = CachedObjectStore(s3, max_bytes=1 << 20)
    s3.put("k.dcm", b"first")
    with pytest.raises(Exception):
        cache.put("k.dcm", b"second", sha256=sha256_hex(b"second"), if_absent=True)
    cache.flush()
    assert cache.cached_bytes == 0


def test_zero_bytes_disables_it(s3: S3ObjectStore) -> None:
    cache = CachedObjectStore(s3, max_bytes=0)
    cache.put("k.dcm", b"abc", sha256=sha256_hex(b"abc"))
    cache.flush()
    assert cache.get("k.dcm", version=sha256_hex(b"abc")) == b"abc"
    assert cache.cached_bytes == 0 and cache.hits == 0


def test_bytes_read_are_kept_only_under_the_version_they_carry(s3: S3ObjectStore, s3_server) -> None:
    cache = CachedObjectStore(s3, max_bytes=1 << 20)
    old, new = b"A" * 1000, b"B" * 1000
    s3.put("k.dcm", new, sha256=sha256_hex(new))  # replaced by another node after this reader looked the old one up
    assert cache.get("k.dcm", version=sha256_hex(old)) == new
    assert cache.cached_bytes == 0
    _node(s3, s3_server).put("k.dcm", old, sha256=sha256_hex(old))  # and back: the old version must be read again
    assert cache.get("k.dcm", version=sha256_hex(old)) == old


def test_a_key_is_dropped_through_its_own_entries_never_a_scan(s3: S3ObjectStore) -> None:
    """Entries are also found by key (whole objects and ranges), and that index follows every add, eviction and drop."""
    cache = CachedObjectStore(s3, max_bytes=40_000)
    blobs = {f"{n}.dcm": bytes([n]) * 2000 for n in range(30)}
    for key, data in blobs.items():
        s3.put(key, data, sha256=sha256_hex(data))
        cache.get(key, version=sha256_hex(data))
        cache.get_range(key, 10, 100, version=sha256_hex(data))
    cache.put("0.dcm", b"new", sha256=sha256_hex(b"new"))  # a replacement drops the key's entries at once
    assert set(cache._by_key) == {entry[0] for entry in cache._entries}  # evicted keys are gone from it too
    assert all(entry in cache._entries for entries in cache._by_key.values() for entry in entries)
    assert sum(len(entries) for entries in cache._by_key.values()) == len(cache._entries)
    assert cache.cached_bytes == sum(len(v) for v in cache._entries.values()) <= 40_000
    last = "29.dcm"
    assert cache.cached_range(last, 10, 100, sha256_hex(blobs[last])) == blobs[last][10:110]
    cache.delete(last)
    assert last not in cache._by_key and cache.cached_range(last, 10, 100, sha256_hex(blobs[last])) is None
