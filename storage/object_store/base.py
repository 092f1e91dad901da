"""The interface every object store backend offers.

Backends are synchronous; async callers run them in worker threads.
Objects are atomic: readers see either the whole object or none, never a
partial one. What was ``put`` is durable once ``flush`` returns (some
backends make each ``put`` durable at once; for them ``flush`` does nothing).

Several nodes may file the same SOP Instance UID at once, and keys are
deterministic by UIDs. A ``put(..., if_absent=True)`` never replaces an
object already under its key: where ``create_only`` is true the store makes
that atomic (S3 ``If-None-Match: *``, a hard link of a complete file); where
it is false the store only checks first, and the caller verifies afterwards
by checksum (``info``); ``put`` says which of its writes were atomic. A refused put raises ObjectExists from ``put`` or is
named in what ``flush`` returns.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol


class ObjectStoreError(Exception):
    """The object store could not complete an operation."""


class ObjectNotFound(ObjectStoreError):
    """No object is stored under the key."""


class ObjectExists(ObjectStoreError):
    """A create-only put found an object already stored under the key; nothing was written."""


@dataclass(frozen=True)
class ObjectInfo:
    """What is stored under a key: its size and the SHA-256 of its bytes (hex)."""

    size: int
    sha256: str


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


class ObjectStore(Protocol):
    description: str

    @property
    def create_only(self) -> bool:
        """Whether put(if_absent=True) is atomic against another writer."""
        ...

    def creates_atomically(self, size: int) -> bool:
        """Whether a create-only put of an object of ``size`` bytes is atomic (an S3 multipart upload is not)."""
        ...

    def put(
        self,
        key: str,
        data: bytes | bytearray | memoryview,
        content_type: str = "application/dicom",
        *,
        sha256: str = "",
        if_absent: bool = False,
    ) -> bool:
        """Store ``data`` under ``key``; ``sha256`` (of data, when the caller has it) is kept with the object.

        True when the write is atomic against another writer (an ``if_absent`` put the store makes
        create-only); False when it is not (a plain overwrite, a check before the write, an S3 multipart
        upload), and the caller verifies by checksum."""
        ...

    def flush(self) -> set[str]:
        """Make the puts so far durable; the keys of ``if_absent`` puts refused because an object was there."""
        ...

    def writer(self) -> ObjectStore:
        """The same objects for one more filer: a store whose puts and ``flush`` are that filer's alone.

        Puts may wait for ``flush`` (the local store's batch), so two filers must never share one
        store: one's flush would take the other's puts and answer for their refusals."""
        ...

    def get(self, key: str, *, version: str = "") -> bytes:
        """The object; ``version`` (the checksum the index names) lets a cache tell one object from its replacement."""
        ...

    def get_range(self, key: str, offset: int, length: int, *, version: str = "") -> bytes:
        """``length`` bytes from ``offset`` (a frame of pixel data, without reading the whole object)."""
        ...

    def info(self, key: str) -> ObjectInfo | None:
        """Size and SHA-256 of the object (read back when not kept with it); None when there is none."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list_keys(self, prefix: str = "") -> list[str]: ...

    def check(self) -> None:
        """Raise ObjectStoreError unless the store is reachable and writable."""
        ...

    def report(self) -> dict[str, object]:
        """For administrators (/health): whether writes are create-only, what the start-up check found, cache use."""
        ...
