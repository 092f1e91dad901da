"""A durable first-in first-out spool of the messages one process has for the audit record repository.

Layout of the spool's directory (one per gateway process, so each keeps its own order and its own numbers):

- segments ``<number of the first message, 16 digits>.seg``, appended to only, each record ``length (4 bytes,
  big-endian) | CRC-32 of the message (4 bytes) | message``; a new segment is begun once one passes
  ``segment_bytes``;
- ``sent``, the number of the first message not delivered yet, replaced whole (written aside, flushed, renamed);
- ``lock``, held (``flock``) by the process using the spool: a second one is refused.

Each ``append`` reaches the disk (``fsync``) before it returns, and a record half-written when the machine
stopped is cut off at the next open (its CRC or length does not hold). Segments wholly delivered are deleted.
Messages are numbered from 1 without gaps for the spool's life, across restarts. Every method blocks on the
disk: call it off the event loop.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, TypeVar

from storage.durable import fsync_dir

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
_MAX_RECORD = 16 << 20
T = TypeVar("T")


class SpoolLocked(RuntimeError):
    """Another process is using this audit spool."""


def _append_only(path: Path) -> BinaryIO:
    """A segment opened to append, readable by the gateway's user only (audit messages name users and hosts)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")


def _records(data: bytes) -> tuple[list[bytes], int]:
    """The whole records at the start of ``data`` and where they end (a torn or damaged tail is left out)."""
    out, at = [], 0
    while at + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, at)
        end = at + _HEADER.size + length
        if length > _MAX_RECORD or end > len(data):
            break
        message = data[at + _HEADER.size : end]
        if zlib.crc32(message) != crc:
            break
        out.append(message)
        at = end
    return out, at


class AuditSpool:
    """The messages of one process waiting for the audit record repository, on disk, in order."""

    def __init__(self, directory: Path, *, segment_bytes: int = 4 << 20) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolLocked(f"audit spool {directory} is in use by another process") from None
        self.sent = self._read_sent()  # number of the first message not delivered
        self.next_number = self.sent
        segments = self._segments()
        if segments:
            last = segments[-1]
            data = self._path(last).read_bytes()
            records, end = _records(data)
            if end < len(data):
                log.warning("audit spool: %d byte(s) of a message cut short at the end of %s dropped", len(data) - end,
                            self._path(last).name)  # fmt: skip
                with open(self._path(last), "r+b") as fh:
                    fh.truncate(end)
                    os.fsync(fh.fileno())
            self.next_number = max(self.sent, last + len(records))
        # Where the first message not delivered starts (segment, byte offset), once known; and where each message
        # handed to the sender ends, to move there once it is delivered.
        self._position: tuple[int, int | None] = (0, None)
        self._ends: dict[int, tuple[int, int]] = {}
        self._current = segments[-1] if segments else None
        self._file = _append_only(self._path(self._current)) if self._current is not None else None

    # ------------------------------------------------------------------ files

    def _path(self, first: int) -> Path:
        return self.directory / f"{first:016d}.seg"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.directory.glob("*.seg") if p.stem.isdigit())

    def _read_sent(self) -> int:
        try:
            text = (self.directory / "sent").read_text().strip()
        except FileNotFoundError:
            return 1
        return int(text) if text.isdigit() and int(text) > 0 else 1

    def _write_sent(self, number: int) -> None:
        aside = self.directory / "sent.new"
        with os.fdopen(os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            fh.write(f"{number}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(aside, self.directory / "sent")
        fsync_dir(self.directory)

    # ------------------------------------------------------------------ the writer's side

    def append(self, items: Sequence[T], make: Callable[[T, int], bytes]) -> int:
        """Append one message per item, ``make(item, number)`` giving it its number; on disk when this returns.
        The number of the last message appended (0 if none)."""
        if not items:
            return 0
        with self._lock:
            if self._file is None or self._file.tell() >= self.segment_bytes:
                self._begin_segment()
            assert self._file is not None
            chunks = []
            for item in items:
                message = make(item, self.next_number)
                chunks.append(_HEADER.pack(len(message), zlib.crc32(message)) + message)
                self.next_number += 1
            self._file.write(b"".join(chunks))
            self._file.flush()
            os.fsync(self._file.fileno())
            return self.next_number - 1

    def _begin_segment(self) -> None:
        if self._file is not None:
            self._file.close()
        self._current = self.next_number
        self._file = _append_only(self._path(self._current))
        fsync_dir(self.directory)

    # ------------------------------------------------------------------ the sender's side

    @property
    def pending(self) -> int:
        return self.next_number - self.sent

    def read(self, max_messages: int, max_bytes: int = 1 << 20) -> list[tuple[int, bytes]]:
        """The first messages not delivered yet, with their numbers (at least one when any is waiting)."""
        out: list[tuple[int, bytes]] = []
        size = 0
        with self._lock:
            segments = self._segments()
            if self._file is not None:
                self._file.flush()
        first_at, offset = self._position if self._position[1] is not None else (None, None)
        chunk = max(max_bytes, 1 << 16) + _HEADER.size
        for index, first in enumerate(segments):
            following = segments[index + 1] if index + 1 < len(segments) else None
            if following is not None and following <= self.sent:
                continue  # delivered entirely
            at, number = (offset, self.sent) if first == first_at and offset is not None else (0, first)
            try:
                fh = open(self._path(first), "rb")
            except FileNotFoundError:
                continue
            with fh:
                size_on_disk = os.fstat(fh.fileno()).st_size
                while at < size_on_disk:
                    fh.seek(at)
                    data = fh.read(chunk)
                    records, end = _records(data)
                    if not records:
                        if len(data) < chunk:
                            break  # a torn tail being written, or damage: nothing more here
                        chunk *= 2  # one message longer than a chunk
                        continue
                    for message in records:
                        at += _HEADER.size + len(message)
                        if number >= self.sent:
                            if out and (len(out) >= max_messages or size + len(message) > max_bytes):
                                return out
                            out.append((number, message))
                            self._ends[number] = (first, at)
                            size += len(message)
                        number += 1
        return out

    def delivered(self, last: int) -> None:
        """Messages up to number ``last`` reached the repository: never read again, even after a restart."""
        if last < self.sent:
            return
        self.sent = last + 1
        self._write_sent(self.sent)
        end = self._ends.get(last)
        self._position = end if end is not None else (0, None)
        self._ends = {number: place for number, place in self._ends.items() if number > last}
        with self._lock:
            segments = self._segments()
            for first, following in zip(segments, segments[1:], strict=False):
                if following <= self.sent and first != self._current:
                    self._path(first).unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        os.close(self._lock_fd)
