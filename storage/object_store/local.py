"""A directory on the local file system as an object store (the embedded default)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from storage.durable import fsync_dir
from storage.object_store.base import ObjectInfo, ObjectNotFound, ObjectStoreError

_TMP_DIR = ".incoming"


class LocalObjectStore:
    """Objects are files named by their key below ``root``.

    ``put`` writes to a temporary file in ``root/.incoming/<store>/``, a
    folder of this store's own; ``flush`` fsyncs the batch's files together
    (the file system commits them in one journal transaction), renames them
    into place and syncs each directory once. So an object appears under its
    key only complete and on disk, and a batch costs a few syncs instead of
    two per object. A create-only put is a hard link of that complete,
    synced file, which fails when the key exists: of two writers (threads,
    processes, or nodes sharing the file system) exactly one places its
    object, whole. The batch is the store's, so each filer opens its own
    (``writer``): a flush makes durable, and answers for, every put made
    through the store since the last one. Each store holds a lock on its folder while it lives;
    opening a store removes the folders no live store holds (writes of a
    process that stopped before its flush), never another process's.
    """

    create_only = True

    def creates_atomically(self, size: int) -> bool:
        return True

    def __init__(self, root: Path, sync_threads: int = 8) -> None:
        self.root = root.resolve()
        self.description = f"local directory {self.root}"
        incoming = self.root / _TMP_DIR
        self._tmp = incoming / uuid.uuid4().hex
        self._tmp.mkdir(parents=True)
        self._owner = os.open(self._tmp / ".owner", os.O_CREAT | os.O_RDWR, 0o600)  # held until the process ends
        fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for leftover in incoming.iterdir():
            if leftover != self._tmp:
                _remove_if_abandoned(leftover)
        self._pending: dict[Path, tuple[Path, bool]] = {}  # final path -> temporary file, create-only
        self._lock = threading.Lock()
        self._sync_threads = sync_threads
        self._sync_pool = ThreadPoolExecutor(max_workers=sync_threads, thread_name_prefix="local-sync")

    def writer(self) -> LocalObjectStore:
        return LocalObjectStore(self.root, self._sync_threads)

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/") or key.startswith(_TMP_DIR):
            raise ObjectStoreError(f"invalid object key {key!r}")
        return self.root / key

    def put(
        self,
        key: str,
        data: bytes | bytearray | memoryview,
        content_type: str = "application/dicom",
        *,
        sha256: str = "",
        if_absent: bool = False,
    ) -> bool:
        target = self._path(key)
        tmp = self._tmp / uuid.uuid4().hex
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ObjectStoreError(f"cannot write object: {exc.strerror}") from exc
        with self._lock:
            replaced = self._pending.pop(target, None)
            self._pending[target] = (tmp, if_absent)
        if replaced is not None:
            replaced[0].unlink(missing_ok=True)
        return if_absent  # placed by a hard link at flush: never over another writer's object

    def flush(self) -> set[str]:
        with self._lock:
            pending, self._pending = self._pending, {}
        refused: set[str] = set()
        if not pending:
            return refused
        try:
            list(self._sync_pool.map(_fsync_file, [tmp for tmp, _ in pending.values()]))
            for target, (tmp, if_absent) in pending.items():
                target.parent.mkdir(parents=True, exist_ok=True)
                if not if_absent:
                    os.replace(tmp, target)
                    continue
                try:
                    os.link(tmp, target)  # never replaces: fails if another writer placed the key first
                except FileExistsError:
                    refused.add(target.relative_to(self.root).as_posix())
                tmp.unlink()
            list(self._sync_pool.map(fsync_dir, {target.parent for target in pending} | {self._tmp}))
        except OSError as exc:
            for tmp, _ in pending.values():
                tmp.unlink(missing_ok=True)
            raise ObjectStoreError(f"cannot make objects durable: {exc.strerror}") from exc
        return refused

    def get(self, key: str, *, version: str = "") -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise ObjectStoreError(f"cannot read object: {exc.strerror}") from exc

    def get_range(self, key: str, offset: int, length: int, *, version: str = "") -> bytes:
        try:
            with open(self._path(key), "rb") as fh:
                fh.seek(offset)
                return fh.read(length)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise ObjectStoreError(f"cannot read object: {exc.strerror}") from exc

    def info(self, key: str) -> ObjectInfo | None:
        digest = hashlib.sha256()
        try:
            with open(self._path(key), "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                hashlib.file_digest(fh, lambda: digest)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ObjectStoreError(f"cannot read object: {exc.strerror}") from exc
        return ObjectInfo(size, digest.hexdigest())

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise ObjectStoreError(f"cannot delete object: {exc.strerror}") from exc

    def list_keys(self, prefix: str = "") -> list[str]:
        keys = []
        for path in self.root.rglob("*"):
            if path.is_file() and not path.is_relative_to(self.root / _TMP_DIR):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def report(self) -> dict[str, object]:
        return {"create_only": True, "conformance": "hard link of a synced file, never replaces"}

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise ObjectStoreError(f"{self.root} is not writable")


_SETTLE_SECONDS = 60.0  # a store just being made may not hold its lock yet: its folder is left alone that long


def _remove_if_abandoned(path: Path) -> None:
    """Remove a temporary folder whose store is gone (its lock is free), or a file an earlier release left."""
    try:
        if not path.is_dir():
            path.unlink(missing_ok=True)
            return
        if time.time() - path.stat().st_mtime < _SETTLE_SECONDS:
            return
        fd = os.open(path / ".owner", os.O_RDWR)
    except FileNotFoundError:
        shutil.rmtree(path, ignore_errors=True)  # never locked: made by a store stopped at once
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # a live store's: its writes are waiting for their flush
    finally:
        os.close(fd)  # closing releases the lock taken just above, if it was taken
    shutil.rmtree(path, ignore_errors=True)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
