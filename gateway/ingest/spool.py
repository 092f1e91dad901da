"""The durable spool: an append-only log of received instances.

A C-STORE is acknowledged once its record is in the log and the log is
fdatasync'd.  Concurrent associations share one fdatasync (group commit).

Segments are recycled: a consumed segment becomes a spare, and spares are
zero-filled ahead of need, so appends overwrite blocks the file system has
already allocated.  Writing into a fresh file costs 2-5 times more per record
on ext4 (block allocation, metadata journalled by every fdatasync).

The directory's other files (lock, checkpoint, spares, set-aside records) are
in ``spool_files``; reading segments back at start, and what is torn or
damaged, in ``spool_recovery``. Each record header holds a magic, the number
of its segment, both lengths, a CRC-32 of meta and data and a CRC-32 of
itself (see ``spool_format``); the meta is the spool record (``spool_record``).

One process has a spool open at a time (its lock file); one consumer (the
spool worker) reads records in order and, once they are stored and indexed,
moves the checkpoint past them.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.ingest import spool_files
from gateway.ingest.spool_files import Position, Spares, SpoolLocked, pwrite_all, segment_name
from gateway.ingest.spool_format import HEADER_SIZE, crc32, encode_header, next_record, read_header
from gateway.ingest.spool_recovery import Damage, recover_segment
from storage.durable import fsync_dir

__all__ = ["Position", "SpoolFull", "SpoolLocked", "SpoolLog", "SpoolRecord"]

log = logging.getLogger(__name__)


class SpoolFull(Exception):
    """The spool cannot take the record without breaking its size or free-space limits."""


@dataclass(frozen=True)
class SpoolRecord:
    start: Position
    end: Position  # just past the record
    meta: dict[str, Any]
    data: memoryview  # a view into the record as read, not a copy

    @property
    def size(self) -> int:
        return self.end.offset - self.start.offset


class SpoolLog:
    """The durable spool: appends acknowledged instances, recovers them at start, hands them to one reader."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int,
        max_bytes: int,
        min_free_bytes: int,
        preallocated_segments: int = 0,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.checkpoint_interval = 1.0
        self._spares = Spares(directory, segment_bytes=segment_bytes, preallocated=preallocated_segments)
        self._damage = Damage(directory)
        self._lock_fd = -1
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._readable = threading.Condition()
        self._sizes: dict[int, int] = {}  # live segment -> end of its valid data
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
        self._closed = True

    # ------------------------------------------------------------ lifecycle

    def open(self) -> SpoolLog:
        """Take the spool's lock (SpoolLocked if a live process holds it) and recover what it holds."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = spool_files.lock(self.directory)
        try:
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise
        self._closed = False
        if self._backlog_records:
            log.info("spool recovered %d instance(s) not yet stored", self._backlog_records)
        self._spares.start(lambda: self._closed)
        return self

    def _recover(self) -> None:
        self._spares.open()
        checkpoint = spool_files.load_checkpoint(self.directory)
        segments = sorted(
            int(p.name[4:-4]) for p in self.directory.glob("seg-*.log") if p.name[4:-4].isdigit()
        )
        for seq in segments:
            if seq < checkpoint.segment:
                self._spares.retire(seq)
        segments = [s for s in segments if s >= checkpoint.segment]
        if segments and checkpoint.segment not in segments:
            checkpoint = Position(segments[0], 0)
        for seq in segments:
            start = checkpoint.offset if seq == checkpoint.segment else 0
            end, records, size = recover_segment(self.directory, seq, start, newest=seq == segments[-1], damage=self._damage)
            self._sizes[seq] = end
            self._backlog_records += records
            self._backlog_bytes += size
        # Above every number a segment ever had, recycled ones included, so that a
        # stale record can never carry the number of the segment it sits in.
        self._write_seq = max([*segments, *self._spares.recycled_numbers(), checkpoint.segment]) + 1
        self._read_pos = checkpoint if segments else Position(self._write_seq, 0)
        self._open_segment(self._write_seq)
        self._written = self._durable = Position(self._write_seq, 0)

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
        self._spares.join()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1

    def _open_segment(self, seq: int) -> None:
        path = self.directory / segment_name(seq)
        spare = self._spares.take()
        if spare is not None:
            os.replace(spare, path)
        self._write_fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        fsync_dir(self.directory)
        self._sizes[seq] = 0
        self._write_seq = seq

    # --------------------------------------------------------------- writing

    def append(self, meta: dict[str, Any], data: bytes | bytearray | memoryview) -> None:
        """Append a record; when this returns the record survives a crash or power loss."""
        meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
        crc = crc32(data, crc32(meta_bytes))
        length = HEADER_SIZE + len(meta_bytes) + len(data)
        with self._write_lock:
            if self._closed:
                raise OSError("spool is closed")
            if self._backlog_bytes + length > self.max_bytes:
                raise SpoolFull("spool backlog limit reached")
            if shutil.disk_usage(self.directory).free - length < self.min_free_bytes:
                raise SpoolFull("too little free disk space for the spool")
            if self._sizes[self._write_seq] and self._sizes[self._write_seq] + length > self.segment_bytes:
                self._rotate()
            seq, start = self._write_seq, self._sizes[self._write_seq]
            header = encode_header(seq, len(meta_bytes), len(data), crc)
            try:
                pwrite_all(self._write_fd, header + meta_bytes, start)
                pwrite_all(self._write_fd, data, start + HEADER_SIZE + len(meta_bytes))
            except OSError:
                # Unacknowledged and never read: the next record overwrites it.
                raise
            self._sizes[seq] = start + length
            self._written = Position(seq, start + length)
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
            if self._read_pos < self._durable:
                return True
            self._readable.wait(timeout)
            return self._read_pos < self._durable

    def read_batch(self, max_records: int, max_bytes: int) -> list[SpoolRecord]:
        """The next durable records after the read cursor (single consumer)."""
        durable = self._durable
        records: list[SpoolRecord] = []
        taken = 0
        pos = self._read_pos
        while len(records) < max_records and taken < max_bytes and pos < durable:
            with self._write_lock:
                limit = durable.offset if pos.segment == durable.segment else self._sizes.get(pos.segment, 0)
                following = [s for s in self._sizes if s > pos.segment] if pos.offset >= limit else []
            if pos.offset >= limit:
                if not following:
                    break
                pos = Position(min(following), 0)
                continue
            resume = self._damage.skips.get(pos.segment, {}).get(pos.offset)
            if resume is None:
                record = self._read_record(pos, limit)
                if record is not None:
                    records.append(record)
                    taken += record.size
                    pos = record.end
                    continue
                resume = self._damaged_while_running(pos, limit)
            pos = Position(pos.segment, resume)
        self._read_pos = pos
        return records

    def _read_record(self, pos: Position, limit: int) -> SpoolRecord | None:
        fd = self._reader(pos.segment)
        header = read_header(os.pread(fd, HEADER_SIZE, pos.offset), pos.segment, 0)
        if header is None or not header.plausible or pos.offset + header.end > limit:
            return None
        body = os.pread(fd, header.end - header.body, pos.offset + header.body)
        if len(body) != header.end - header.body or crc32(body) != header.body_crc:
            return None
        end = Position(pos.segment, pos.offset + header.end)
        return SpoolRecord(pos, end, json.loads(body[: header.meta_len]), memoryview(body)[header.meta_len :])

    def _damaged_while_running(self, pos: Position, limit: int) -> int:
        """A record written whole fails its checksum when read back: set it aside, go on after it."""
        with mmap.mmap(self._reader(pos.segment), limit, access=mmap.ACCESS_READ) as buf:
            header = read_header(buf, pos.segment, pos.offset)
            resume = next_record(buf, pos.segment, pos.offset, limit, header)
            if resume is None:  # the last durable record: the next one will begin where it ends
                resume = limit
            self._damage.set_aside(buf, pos.segment, pos.offset, resume)
        with self._write_lock:  # one record as a rule; commit() corrects the count once all is filed
            self._backlog_records = max(0, self._backlog_records - 1)
            self._backlog_bytes = max(0, self._backlog_bytes - (resume - pos.offset))
        return resume

    def _reader(self, seq: int) -> int:
        fd = self._read_fds.get(seq)
        if fd is None:
            fd = self._read_fds[seq] = os.open(self.directory / segment_name(seq), os.O_RDONLY)
        return fd

    def rewind(self, records: list[SpoolRecord]) -> None:
        """Put records read but not committed back in front of the cursor (to retry them)."""
        if records:
            self._read_pos = records[0].start

    def commit(self, records: list[SpoolRecord]) -> None:
        """Everything up to the last of ``records`` is stored and indexed: forget it.

        The checkpoint on disk may lag (at most ``checkpoint_interval``): after a
        crash the records since it are filed again, which is harmless because
        filing is idempotent. It is always saved before a segment is recycled.
        """
        if not records:
            return
        self._consumed = records[-1].end
        with self._write_lock:
            finished = any(s < self._consumed.segment for s in self._sizes)
        if finished or time.monotonic() - self._checkpoint_saved_at >= self.checkpoint_interval:
            self._persist_checkpoint()  # if this fails the worker files the batch again
        with self._write_lock:
            self._backlog_records -= len(records)
            self._backlog_bytes -= sum(r.size for r in records)
            if self._consumed >= self._written:  # nothing waits, whatever was set aside on the way
                self._backlog_records = self._backlog_bytes = 0

    def _persist_checkpoint(self) -> None:
        upto = self._consumed
        if upto is None:
            return
        spool_files.save_checkpoint(self.directory, upto)
        self._checkpoint_saved_at = time.monotonic()
        with self._write_lock:
            finished = [s for s in self._sizes if s < upto.segment]
            for seq in finished:
                del self._sizes[seq]
                self._damage.skips.pop(seq, None)
        for seq in finished:
            fd = self._read_fds.pop(seq, None)
            if fd is not None:
                os.close(fd)
            self._spares.retire(seq)

    # ---------------------------------------------------------------- status

    @property
    def backlog_records(self) -> int:
        return self._backlog_records

    @property
    def backlog_bytes(self) -> int:
        return self._backlog_bytes

    @property
    def damaged_records(self) -> int:
        """Damaged records set aside since the spool was opened (at start-up or when read back)."""
        return self._damage.count
