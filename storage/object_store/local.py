"""A directory on the local file system as an object store (the embedded default)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from storage.durable import fsync_dir
from storage.object_store.base import ObjectNotFound, ObjectStoreError

_TMP_DIR = ".incoming"



class LocalObjectStore:
    """Objects are files named by their key below ``root``.

    Writes go to a temporary file in ``root/.incoming``, are fsync'd and then
    renamed into place, so a crash never leaves a partial object under a key.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.description = f"local directory {self.root}"
        self._tmp = self.root / _TMP_DIR
        self._tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():  # partial writes of a crashed process
            leftover.unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/") or key.startswith(_TMP_DIR):
            raise ObjectStoreError(f"invalid object key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes, content_type: str = "application/dicom") -> None:
        target = self._path(key)
        tmp = self._tmp / uuid.uuid4().hex
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            fsync_dir(target.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ObjectStoreError(f"cannot write object: {exc.strerror}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise ObjectStoreError(f"cannot read object: {exc.strerror}") from exc

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
            if path.is_file() and not path.is_relative_to(self._tmp):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise ObjectStoreError(f"{self.root} is not writable")
