"""The interface every object store backend offers.

Backends are synchronous; async callers run them in worker threads.
Objects are atomic: readers see either the whole object or none, never a
partial one. What was ``put`` is durable once ``flush`` returns (some
backends make each ``put`` durable at once; for them ``flush`` does nothing).
"""

from __future__ import annotations

from typing import Protocol


class ObjectStoreError(Exception):
    """The object store could not complete an operation."""


class ObjectNotFound(ObjectStoreError):
    """No object is stored under the key."""


class ObjectStore(Protocol):
    description: str

    def put(self, key: str, data: bytes | bytearray | memoryview, content_type: str = "application/dicom") -> None: ...

    def flush(self) -> None: ...

    def get(self, key: str) -> bytes: ...

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (a frame of pixel data, without reading the whole object)."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list_keys(self, prefix: str = "") -> list[str]: ...

    def check(self) -> None:
        """Raise ObjectStoreError unless the store is reachable and writable."""
        ...
