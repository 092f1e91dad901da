"""The durable spool: an append-only log of received instances.

A C-STORE is acknowledged once its record is in the log and the log is
fdatasync'd.  Appending to a log costs about a quarter of what a new fsync'd
file per instance costs (no inode, no directory entry per instance), and
concurrent associations share one fdatasync (group commit).

Layout of the spool directory::

    seg-0000000000000001.log   records: header | meta (JSON) | data
    seg-0000000000000002.log   ...
    checkpoint                 {"segment": N, "offset": M}: all before it is stored and indexed
    quarantine/                bytes found damaged at recovery, kept for inspection

Each record: magic ``PGSR``, CRC-32 of meta and data, meta length, data
length.  A record torn by a crash (never acknowledged, since the sync had not
returned) fails its checksum and is cut off at the next start.

One consumer (the spool worker) reads records in order and, once they are
stored and indexed, moves the checkpoint past them; segments wholly before the
checkpoint are deleted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_MAGIC = b"PGSR"
_HEADER = struct.Struct("<4sIIQ")  # magic, crc32, meta length, data length
_MAX_META = 1 << 24
_MAX_DATA = 1 << 40


class SpoolFull(Exception):
    """The spool cannot take the record without breaking its size or free-space limits."""


@dataclass(frozen=True, order=True)
class Position:
    segment: int
    offset: int


@dataclass(frozen=True)
class SpoolRecord:
    start: Position
    end: Position  # just past the record
    meta: dict[str, Any]
    data: bytes

    @property
    def size(self) -> int:
        return self.end.offset - self.start.offset


def _segment_name(seq: int) -> str:
    return f"seg-{seq:016d}.log"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _encode_header(meta: dict[str, Any], data: bytes) -> bytes:
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    crc = zlib.crc32(data, zlib.crc32(meta_bytes))
    return _HEADER.pack(_MAGIC, crc, len(meta_bytes), len(data)) + meta_bytes


class SpoolLog:
    def __init__(self, directory: Path, *, segment_bytes: int, max_bytes: int, min_free_bytes: int) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._readable = threading.Condition()
        self._sizes: dict[int, int] = {}  # segment -> size, for every live segment
        self._write_seq = 0
        self._write_fd = -1
        self._retired_fds: list[int] = []
        self._written = Position(0, 0)
        self._durable = Position(0, 0)
        self._read_pos = Position(0, 0)
        self._read_fds: dict[int, int] = {}
        self._backlog_records = 0
        self._backlog_bytes = 0
        self._consumed: Position | None = None
        self._checkpoint_saved_at = 0.0
        self.checkpoint_interval = 1.0
        self._closed = True

    # ------------------------------------------------------------ lifecycle

    def open(self) -> SpoolLog:
        self.directory.mkdir(parents=True, exist_ok=True)
        checkpoint = self._load_checkpoint()
        segments = sorted(
            int(p.name[4:-4]) for p in self.directory.glob("seg-*.log") if p.name[4:-4].isdigit()
        )
        for seq in segments:
            if seq < checkpoint.segment:
                (self.directory / _segment_name(seq)).unlink()
        segments = [s for s in segments if s >= checkpoint.segment]
        if segments and checkpoint.segment not in segments:
            checkpoint = Position(segments[0], 0)
        for seq in segments:
            start = checkpoint.offset if seq == checkpoint.segment else 0
            self._sizes[seq] = self._recover_segment(seq, start)
        self._read_pos = checkpoint if segments else Position(0, 0)
        self._write_seq = (segments[-1] if segments else checkpoint.segment) + 1
        self._open_segment(self._write_seq)
        self._written = self._durable = Position(self._write_seq, 0)
        if segments and self._read_pos < Position(segments[0], 0):
            self._read_pos = Position(segments[0], 0)
        if not segments:
            self._read_pos = Position(self._write_seq, 0)
        self._closed = False
        if self._backlog_records:
            log.info("spool recovered %d instance(s) not yet stored", self._backlog_records)
        return self

    def close(self) -> None:
        if not self._closed:
            self._persist_checkpoint()
        with self._sync_lock, self._write_lock:
            self._closed = True
            for fd in [self._write_fd, *self._retired_fds, *self._read_fds.values()]:
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self._write_fd = -1
            self._retired_fds.clear()
            self._read_fds.clear()
        with self._readable:
            self._readable.notify_all()

    def _recover_segment(self, seq: int, start: int) -> int:
        """Validate records from ``start``; cut off a torn tail. Returns the valid size."""
        path = self.directory / _segment_name(seq)
        size = path.stat().st_size
        offset = start
        with open(path, "rb") as fh:
            while offset < size:
                fh.seek(offset)
                header = fh.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    break
                magic, crc, meta_len, data_len = _HEADER.unpack(header)
                if magic != _MAGIC or meta_len > _MAX_META or data_len > _MAX_DATA:
                    break
                end = offset + _HEADER.size + meta_len + data_len
                if end > size:
                    break
                body = fh.read(meta_len + data_len)
                if zlib.crc32(body) != crc:
                    break
                self._backlog_records += 1
                self._backlog_bytes += end - offset
                offset = end
        if offset < size:
            quarantine = self.directory / "quarantine"
            quarantine.mkdir(exist_ok=True)
            kept = quarantine / f"{_segment_name(seq)}.{offset}.bin"
            with open(path, "rb") as src, open(kept, "wb") as dst:
                src.seek(offset)
                shutil.copyfileobj(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
            with open(path, "r+b") as fh:
                fh.truncate(offset)
                fh.flush()
                os.fsync(fh.fileno())
            log.warning(
                "spool segment %d: %d byte(s) of an unfinished write cut off (kept in quarantine)", seq, size - offset
            )
        return offset

    def _open_segment(self, seq: int) -> None:
        path = self.directory / _segment_name(seq)
        self._write_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _fsync_dir(self.directory)
        self._sizes[seq] = 0
        self._write_seq = seq

    def _load_checkpoint(self) -> Position:
        try:
            data = json.loads((self.directory / "checkpoint").read_text())
            return Position(int(data["segment"]), int(data["offset"]))
        except FileNotFoundError:
            return Position(0, 0)
        except (ValueError, KeyError, TypeError):
            # A checkpoint is replaced atomically, so this is outside damage: replay
            # everything (storing again is idempotent) rather than skip anything.
            log.error("spool checkpoint unreadable; replaying every spooled record")
            return Position(0, 0)

    def _save_checkpoint(self, position: Position) -> None:
        tmp = self.directory / "checkpoint.tmp"
        with open(tmp, "w") as fh:
            json.dump({"segment": position.segment, "offset": position.offset}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.directory / "checkpoint")
        _fsync_dir(self.directory)

    # --------------------------------------------------------------- writing

    def append(self, meta: dict[str, Any], data: bytes) -> None:
        """Append a record; when this returns the record survives a crash or power loss."""
        header = _encode_header(meta, data)
        length = len(header) + len(data)
        with self._write_lock:
            if self._closed:
                raise OSError("spool is closed")
            if self._backlog_bytes + length > self.max_bytes:
                raise SpoolFull("spool backlog limit reached")
            if shutil.disk_usage(self.directory).free - length < self.min_free_bytes:
                raise SpoolFull("too little free disk space for the spool")
            if self._sizes[self._write_seq] and self._sizes[self._write_seq] + length > self.segment_bytes:
                self._rotate()
            start = self._sizes[self._write_seq]
            try:
                _write_all(self._write_fd, header)
                _write_all(self._write_fd, data)
            except OSError:
                # Leave no partial record behind for the next appender to follow.
                os.ftruncate(self._write_fd, start)
                raise
            self._sizes[self._write_seq] = start + length
            self._written = Position(self._write_seq, start + length)
            self._backlog_records += 1
            self._backlog_bytes += length
            mine = self._written
        self._sync_to(mine)

    def _rotate(self) -> None:
        os.fdatasync(self._write_fd)
        self._retired_fds.append(self._write_fd)
        self._open_segment(self._write_seq + 1)

    def _sync_to(self, position: Position) -> None:
        with self._sync_lock:
            if self._durable >= position:
                return
            with self._write_lock:
                target, fd = self._written, self._write_fd
                retired, self._retired_fds = self._retired_fds, []
            os.fdatasync(fd)
            for old in retired:  # already synced at rotation
                os.close(old)
            self._durable = target
        with self._readable:
            self._readable.notify_all()

    # --------------------------------------------------------------- reading

    def wait_for_records(self, timeout: float) -> bool:
        with self._readable:
            if self._read_pos < self._durable_snapshot():
                return True
            self._readable.wait(timeout)
            return self._read_pos < self._durable_snapshot()

    def _durable_snapshot(self) -> Position:
        with self._write_lock:
            return self._durable

    def read_batch(self, max_records: int, max_bytes: int) -> list[SpoolRecord]:
        """The next durable records after the read cursor (single consumer)."""
        durable = self._durable_snapshot()
        records: list[SpoolRecord] = []
        taken = 0
        pos = self._read_pos
        while len(records) < max_records and taken < max_bytes and pos < durable:
            limit = durable.offset if pos.segment == durable.segment else self._sizes.get(pos.segment, 0)
            if pos.offset >= limit:
                with self._write_lock:
                    following = [s for s in self._sizes if s > pos.segment]
                if not following:
                    break
                pos = Position(min(following), 0)
                continue
            fd = self._reader(pos.segment)
            header = os.pread(fd, _HEADER.size, pos.offset)
            magic, crc, meta_len, data_len = _HEADER.unpack(header)
            body = os.pread(fd, meta_len + data_len, pos.offset + _HEADER.size)
            if magic != _MAGIC or len(body) != meta_len + data_len or zlib.crc32(body) != crc:
                raise OSError(f"spool segment {pos.segment} damaged at offset {pos.offset}")
            end = Position(pos.segment, pos.offset + _HEADER.size + meta_len + data_len)
            records.append(SpoolRecord(pos, end, json.loads(body[:meta_len]), body[meta_len:]))
            taken += end.offset - pos.offset
            pos = end
        self._read_pos = pos
        return records

    def _reader(self, seq: int) -> int:
        fd = self._read_fds.get(seq)
        if fd is None:
            fd = self._read_fds[seq] = os.open(self.directory / _segment_name(seq), os.O_RDONLY)
        return fd

    def rewind(self, records: list[SpoolRecord]) -> None:
        """Put records read but not committed back in front of the cursor (to retry them)."""
        if records:
            self._read_pos = records[0].start

    def commit(self, records: list[SpoolRecord]) -> None:
        """Everything up to the last of ``records`` is stored and indexed: forget it.

        The checkpoint on disk may lag (at most ``checkpoint_interval``): after a
        crash the records since it are filed again, which is harmless because
        filing is idempotent. It is always saved before a segment is deleted.
        """
        if not records:
            return
        self._consumed = records[-1].end
        with self._write_lock:
            self._backlog_records -= len(records)
            self._backlog_bytes -= sum(r.size for r in records)
            finished = [s for s in self._sizes if s < self._consumed.segment]
        if finished or time.monotonic() - self._checkpoint_saved_at >= self.checkpoint_interval:
            self._persist_checkpoint()

    def _persist_checkpoint(self) -> None:
        upto = self._consumed
        if upto is None:
            return
        self._save_checkpoint(upto)
        self._checkpoint_saved_at = time.monotonic()
        with self._write_lock:
            finished = [s for s in self._sizes if s < upto.segment]
            for seq in finished:
                del self._sizes[seq]
        for seq in finished:
            fd = self._read_fds.pop(seq, None)
            if fd is not None:
                os.close(fd)
            (self.directory / _segment_name(seq)).unlink(missing_ok=True)

    # ---------------------------------------------------------------- status

    @property
    def backlog_records(self) -> int:
        return self._backlog_records

    @property
    def backlog_bytes(self) -> int:
        return self._backlog_bytes
