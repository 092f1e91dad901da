"""A read cache of recent objects, bounded in bytes, in front of a remote object store (S3)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Protocol

from storage.object_store.base import ObjectInfo, ObjectStore

_Entry = tuple[str, str, int, int]  # key, version, offset, length (-1: the whole object)


class FetchingStore(ObjectStore, Protocol):
    def fetch(self, key: str, offset: int = 0, length: int = 0) -> tuple[bytes, str]:
        """The bytes read and the SHA-256 the object carries."""
        ...


class CachedObjectStore:
    """Serves ``get`` and ``get_range`` from memory when the same version was read or written lately.

    Keys are deterministic by UIDs, so another node may replace the object
    under a key at any time. An entry is therefore found only by key *and*
    version, the SHA-256 the index names for the object (``version=``): a
    replacement has another checksum in the index, so a stale entry can
    never be served, whoever replaced the object. What is read goes in only
    if the SHA-256 the object carries (a header of the same GET) is the
    version asked for, so a read racing a replacement cannot file the new
    bytes under the old version either. A read without a version
    (an index row from before checksums were kept) bypasses the cache.
    Objects this process writes go in once durable (a viewer opens a study
    just received); those it replaces or deletes are dropped at once.
    Least recently used entries go first; an entry larger than a quarter of
    the bound is never kept. ``max_bytes`` 0 disables the cache.
    """

    def __init__(self, inner: FetchingStore, max_bytes: int) -> None:
        self.inner = inner
        self.max_bytes = max_bytes
        self.description = inner.description
        self._entries: OrderedDict[_Entry, bytes] = OrderedDict()
        self._by_key: dict[str, set[_Entry]] = {}  # so dropping a key never scans every entry under the lock
        self._size = 0
        self._lock = threading.Lock()
        self._written: dict[str, tuple[str, bytes]] = {}  # key -> (version, bytes) put but not yet flushed
        self.hits = 0
        self.misses = 0

    @property
    def create_only(self) -> bool:
        return self.inner.create_only

    def creates_atomically(self, size: int) -> bool:
        return self.inner.creates_atomically(size)

    @property
    def cached_bytes(self) -> int:
        return self._size

    def __getattr__(self, name: str) -> object:  # backend extras (ensure_bucket, probe_conditional_put, conformance)
        return getattr(self.inner, name)

    # ---------------------------------------------------------------- writes

    def put(
        self,
        key: str,
        data: bytes | bytearray | memoryview,
        content_type: str = "application/dicom",
        *,
        sha256: str = "",
        if_absent: bool = False,
    ) -> bool:
        if not if_absent:
            self._drop(key)
        atomic = self.inner.put(key, data, content_type, sha256=sha256, if_absent=if_absent)
        if sha256 and self._fits(len(data)):
            with self._lock:
                self._written[key] = (sha256, bytes(data))
        return atomic

    def flush(self) -> set[str]:
        with self._lock:
            written, self._written = self._written, {}
        refused = self.inner.flush()
        for key, (version, data) in written.items():
            if key not in refused:
                self._add((key, version, 0, -1), data)
        return refused

    def writer(self) -> CachedObjectStore:
        inner = self.inner.writer()
        if inner is self.inner:  # puts answered one by one: what is written goes into this cache
            return self
        return CachedObjectStore(inner, self.max_bytes)  # type: ignore[arg-type]

    def delete(self, key: str) -> None:
        self._drop(key)
        self.inner.delete(key)

    # ----------------------------------------------------------------- reads

    def get(self, key: str, *, version: str = "") -> bytes:
        if not version or not self.max_bytes:
            return self.inner.get(key)
        whole = self._lookup((key, version, 0, -1))
        if whole is not None:
            return whole
        data, carried = self.inner.fetch(key)
        if carried == version:
            self._add((key, version, 0, -1), data)
        return data

    def get_range(self, key: str, offset: int, length: int, *, version: str = "") -> bytes:
        if not version or not self.max_bytes:
            return self.inner.get_range(key, offset, length)
        whole = self._lookup((key, version, 0, -1), count=False)
        if whole is not None:
            with self._lock:
                self.hits += 1
            return whole[offset : offset + length]
        entry = (key, version, offset, length)
        part = self._lookup(entry)
        if part is not None:
            return part
        part, carried = self.inner.fetch(key, offset, length)
        if carried == version:
            self._add(entry, part)
        return part

    def cached_range(self, key: str, offset: int, length: int, version: str) -> bytes | None:
        """The range if in memory, else None: never reads the store, so an event loop may ask it directly."""
        if not version or not self.max_bytes:
            return None
        whole = self._lookup((key, version, 0, -1), count=False)
        if whole is not None:
            with self._lock:
                self.hits += 1
            return whole[offset : offset + length]
        entry = (key, version, offset, length)
        with self._lock:
            part = self._entries.get(entry)
            if part is not None:
                self._entries.move_to_end(entry)
                self.hits += 1
        return part

    def info(self, key: str) -> ObjectInfo | None:
        return self.inner.info(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list_keys(self, prefix: str = "") -> list[str]:
        return self.inner.list_keys(prefix)

    def check(self) -> None:
        self.inner.check()

    def report(self) -> dict[str, object]:
        cache = {"max_bytes": self.max_bytes, "bytes": self._size, "hits": self.hits, "misses": self.misses}
        return {**self.inner.report(), "read_cache": cache}

    # ----------------------------------------------------------------- inside

    def _fits(self, size: int) -> bool:
        return 0 < size <= self.max_bytes // 4

    def _lookup(self, entry: _Entry, *, count: bool = True) -> bytes | None:
        with self._lock:
            data = self._entries.get(entry)
            if data is not None:
                self._entries.move_to_end(entry)
                if count:
                    self.hits += 1
            elif count:
                self.misses += 1
            return data

    def _add(self, entry: _Entry, data: bytes) -> None:
        if not self._fits(len(data)):
            return
        with self._lock:
            old = self._entries.pop(entry, None)
            if old is not None:
                self._size -= len(old)
            self._entries[entry] = data
            self._by_key.setdefault(entry[0], set()).add(entry)
            self._size += len(data)
            while self._size > self.max_bytes:
                evicted, evicted_data = self._entries.popitem(last=False)
                self._size -= len(evicted_data)
                self._unlink(evicted)

    def _unlink(self, entry: _Entry) -> None:
        entries = self._by_key.get(entry[0])
        if entries is not None:
            entries.discard(entry)
            if not entries:
                del self._by_key[entry[0]]

    def _drop(self, key: str) -> None:
        with self._lock:
            self._written.pop(key, None)
            for entry in self._by_key.pop(key, ()):
                self._size -= len(self._entries.pop(entry))
