"""The durable spool: an append-only log of received instances.

A C-STORE is acknowledged once its record is in the log and the log is
fdatasync'd.  Concurrent associations share one fdatasync (group commit).

Segments are recycled: a consumed segment becomes a spare, and spares are
zero-filled ahead of need, so appends overwrite blocks the file system has
already allocated.  Writing into a fresh file costs 2-5 times more per record
on ext4 (block allocation, metadata journalled by every fdatasync).

Layout of the spool directory::

    seg-0000000000000001.log   records: header | meta (JSON) | data
    spare/                     segments ready for reuse (content is stale)
    checkpoint                 {"segment": N, "offset": M}: all before it is stored and indexed
    quarantine/                damaged records and torn writes set aside, named by segment and offset

Each record header holds a magic, the number of its segment, both lengths, a
CRC-32 of meta and data and a CRC-32 of itself (see spool_format).  A record
from a segment's previous life carries an older segment number, zero fill has
no magic: either marks the end of the data.  A record torn by a crash (never
acknowledged: its sync had not returned) fails its checksum and nothing valid
follows it; it can only be the last record of the newest segment, since a
segment is fdatasync'd before the next one is begun.  A record that fails its
checksum with valid records after it, or at the end of an older segment, was
damaged on disk: only it is set aside, the search for the next record resumes
at the magic, and the segment is kept until every valid record in it is filed.

One consumer (the spool worker) reads records in order and, once they are
stored and indexed, moves the checkpoint past them.
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

from gateway.ingest.spool_format import (
    HEADER_SIZE,
    Buffer,
    Header,
    crc32,
    encode_header,
    is_whole,
    next_record,
    read_header,
    tail_extent,
)
from storage.durable import fsync_dir

log = logging.getLogger(__name__)

_MAX_SPARES = 4
_ZERO_CHUNK = bytes(1 << 20)


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
    data: memoryview  # a view into the record as read, not a copy

    @property
    def size(self) -> int:
        return self.end.offset - self.start.offset


def _segment_name(seq: int) -> str:
    return f"seg-{seq:016d}.log"


def _quarantine_name(seq: int, offset: int, kind: str) -> str:
    return f"{_segment_name(seq)}.{offset}{kind}.bin"


def _pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


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
        self.preallocated_segments = min(preallocated_segments, _MAX_SPARES)
        self.checkpoint_interval = 1.0
        self._spares = directory / "spare"
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._spare_lock = threading.Lock()
        self._readable = threading.Condition()
        self._sizes: dict[int, int] = {}  # live segment -> end of its valid data
        self._skips: dict[int, dict[int, int]] = {}  # live segment -> {damaged record's start: next record}
        self._damaged_records = 0
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
        self._preallocator: threading.Thread | None = None
        self._closed = True

    # ------------------------------------------------------------ lifecycle

    def open(self) -> SpoolLog:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._spares.mkdir(exist_ok=True)
        for partial in self._spares.glob("*.tmp"):
            partial.unlink()
        checkpoint = self._load_checkpoint()
        segments = sorted(
            int(p.name[4:-4]) for p in self.directory.glob("seg-*.log") if p.name[4:-4].isdigit()
        )
        for seq in segments:
            if seq < checkpoint.segment:
                self._retire_file(seq)
        segments = [s for s in segments if s >= checkpoint.segment]
        if segments and checkpoint.segment not in segments:
            checkpoint = Position(segments[0], 0)
        for seq in segments:
            start = checkpoint.offset if seq == checkpoint.segment else 0
            self._sizes[seq] = self._recover_segment(seq, start, newest=seq == segments[-1])
        # Above every number a segment ever had, recycled ones included, so that a
        # stale record can never carry the number of the segment it sits in.
        recycled = [int(p.stem.split("-")[1]) for p in self._spares.glob("recycled-*.log")]
        self._write_seq = max([*segments, *recycled, checkpoint.segment]) + 1
        self._read_pos = checkpoint if segments else Position(self._write_seq, 0)
        self._open_segment(self._write_seq)
        self._written = self._durable = Position(self._write_seq, 0)
        self._closed = False
        if self._backlog_records:
            log.info("spool recovered %d instance(s) not yet stored", self._backlog_records)
        if self.preallocated_segments:
            self._preallocator = threading.Thread(target=self._preallocate, name="spool-prealloc", daemon=True)
            self._preallocator.start()
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
        if self._preallocator is not None:
            self._preallocator.join()

    def _recover_segment(self, seq: int, start: int, *, newest: bool) -> int:
        """Validate records from ``start``; returns the end of the valid data.

        A damaged record with valid ones after it is set aside and skipped. What
        ends the data is zero fill, stale bytes of a recycled segment or a record
        torn by a crash (in the ``newest`` segment only); a torn or damaged last
        record of this segment's own life is set aside too.
        """
        path = self.directory / _segment_name(seq)
        offset = start
        if path.stat().st_size <= start:
            return start
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            size = len(buf)
            while offset < size:
                header = read_header(buf, seq, offset)
                if header is not None and is_whole(buf, header, size):
                    self._backlog_records += 1
                    self._backlog_bytes += header.end - offset
                    offset = header.end
                    continue
                resume = next_record(buf, seq, offset, size, header)
                if resume is None:
                    self._set_aside_tail(buf, seq, offset, header, newest)
                    break
                self._set_aside_damage(buf, seq, offset, resume)
                offset = resume
        return offset

    def _set_aside_tail(self, buf: Buffer, seq: int, offset: int, header: Header | None, newest: bool) -> None:
        tail = tail_extent(buf, seq, offset, header)
        if tail is None:
            return
        end, damaged = tail
        # Only the newest segment can end in a write cut short by a crash: a segment
        # is fdatasync'd before the next one is begun.  The tail of an older one is
        # damage to a record that was acknowledged, unless an earlier start, when this
        # segment was still the newest, already set it aside as a torn write.
        known_torn = (self.directory / "quarantine" / _quarantine_name(seq, offset, "")).exists()
        if damaged or not (newest or known_torn):
            self._set_aside_damage(buf, seq, offset, end, last=True)
            return
        name = self._quarantine(seq, offset, buf[offset:end], "")
        log.warning(
            "spool segment %d: its last record, at offset %d, is incomplete (a write cut short by a crash, "
            "never acknowledged, or damage); set aside as quarantine/%s",
            seq, offset, name,
        )

    def _set_aside_damage(self, buf: Buffer, seq: int, offset: int, resume: int, *, last: bool = False) -> None:
        name = self._quarantine(seq, offset, buf[offset:resume], ".damaged")  # first: skip only what is kept
        self._skips.setdefault(seq, {})[offset] = resume
        self._damaged_records += 1
        log.error(
            "spool segment %d: damaged record at offset %d (%d bytes, checksum mismatch) set aside as "
            "quarantine/%s; %s",
            seq, offset, resume - offset, name,
            "it was the segment's last record" if last else "the records after it are kept",
        )

    def _quarantine(self, seq: int, offset: int, data: bytes, kind: str) -> str:
        folder = self.directory / "quarantine"
        if not folder.exists():
            folder.mkdir()
            fsync_dir(self.directory)
        name = _quarantine_name(seq, offset, kind)
        with open(folder / name, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(folder)
        return name

    def _open_segment(self, seq: int) -> None:
        path = self.directory / _segment_name(seq)
        spare = self._take_spare()
        if spare is not None:
            os.replace(spare, path)
        self._write_fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        fsync_dir(self.directory)
        self._sizes[seq] = 0
        self._write_seq = seq

    def _take_spare(self) -> Path | None:
        with self._spare_lock:
            spares = sorted(p for p in self._spares.glob("*.log"))
            return spares[0] if spares else None

    def _retire_file(self, seq: int) -> None:
        """Keep a consumed segment as a spare (its blocks are allocated) or delete it."""
        path = self.directory / _segment_name(seq)
        with self._spare_lock:
            if len(list(self._spares.glob("*.log"))) < _MAX_SPARES and path.exists():
                os.replace(path, self._spares / f"recycled-{seq:016d}.log")
                return
        path.unlink(missing_ok=True)

    def _preallocate(self) -> None:
        """Zero-fill spare segments in the background so that early appends overwrite, too."""
        serial = 0
        while not self._closed:
            with self._spare_lock:
                if len(list(self._spares.glob("*.log"))) >= self.preallocated_segments:
                    return
            serial += 1
            tmp = self._spares / f"new-{os.getpid()}-{serial}.tmp"
            try:
                with open(tmp, "wb") as fh:
                    for _ in range(max(1, self.segment_bytes // len(_ZERO_CHUNK))):
                        if self._closed:
                            break
                        fh.write(_ZERO_CHUNK)
                    fh.flush()
                    os.fsync(fh.fileno())
                if self._closed:
                    tmp.unlink(missing_ok=True)
                    return
                with self._spare_lock:
                    os.replace(tmp, tmp.with_suffix(".log"))
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                log.warning("could not prepare a spare spool segment: %s", exc.strerror)
                return

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
        fsync_dir(self.directory)

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
                _pwrite_all(self._write_fd, header + meta_bytes, start)
                _pwrite_all(self._write_fd, data, start + HEADER_SIZE + len(meta_bytes))
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
            resume = self._skips.get(pos.segment, {}).get(pos.offset)
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
            self._set_aside_damage(buf, pos.segment, pos.offset, resume)
        with self._write_lock:  # one record as a rule; commit() corrects the count once all is filed
            self._backlog_records = max(0, self._backlog_records - 1)
            self._backlog_bytes = max(0, self._backlog_bytes - (resume - pos.offset))
        return resume

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
        self._save_checkpoint(upto)
        self._checkpoint_saved_at = time.monotonic()
        with self._write_lock:
            finished = [s for s in self._sizes if s < upto.segment]
            for seq in finished:
                del self._sizes[seq]
                self._skips.pop(seq, None)
        for seq in finished:
            fd = self._read_fds.pop(seq, None)
            if fd is not None:
                os.close(fd)
            self._retire_file(seq)

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
        return self._damaged_records
