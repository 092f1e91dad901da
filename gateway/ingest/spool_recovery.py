"""Reading a spool's segments back at start, and setting aside what is torn or damaged.

A record from a segment's previous life carries an older segment number, zero
fill has no magic: either marks the end of the data. A record torn by a crash
(never acknowledged: its sync had not returned) fails its checksum and nothing
valid follows it; it can only be the last record of the newest segment, since
a segment is fdatasync'd before the next one is begun. A record that fails its
checksum with valid records after it, or at the end of an older segment, was
damaged on disk: only it is set aside, the search for the next record resumes
at the magic, and the segment is kept until every valid record in it is filed.
"""

from __future__ import annotations

import logging
import mmap
from pathlib import Path

from gateway.ingest.spool_files import quarantine_name, segment_name, write_quarantine
from gateway.ingest.spool_format import Buffer, Header, is_whole, next_record, read_header, tail_extent

log = logging.getLogger("gateway.ingest.spool")


class Damage:
    """Damaged records of a spool set aside: where each begins and where the next record resumes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.skips: dict[int, dict[int, int]] = {}  # live segment -> {damaged record's start: next record}
        self.count = 0

    def set_aside(self, buf: Buffer, seq: int, offset: int, resume: int, *, last: bool = False) -> None:
        name = write_quarantine(self.directory, seq, offset, buf[offset:resume], ".damaged")  # first: skip only what is kept
        self.skips.setdefault(seq, {})[offset] = resume
        self.count += 1
        log.error(
            "spool segment %d: damaged record at offset %d (%d bytes, checksum mismatch) set aside as "
            "quarantine/%s; %s",
            seq, offset, resume - offset, name,
            "it was the segment's last record" if last else "the records after it are kept",
        )

    def set_aside_tail(self, buf: Buffer, seq: int, offset: int, header: Header | None, newest: bool) -> None:
        tail = tail_extent(buf, seq, offset, header)
        if tail is None:
            return
        end, damaged = tail
        # Only the newest segment can end in a write cut short by a crash: a segment
        # is fdatasync'd before the next one is begun.  The tail of an older one is
        # damage to a record that was acknowledged, unless an earlier start, when this
        # segment was still the newest, already set it aside as a torn write.
        known_torn = (self.directory / "quarantine" / quarantine_name(seq, offset, "")).exists()
        if damaged or not (newest or known_torn):
            self.set_aside(buf, seq, offset, end, last=True)
            return
        name = write_quarantine(self.directory, seq, offset, buf[offset:end], "")
        log.warning(
            "spool segment %d: its last record, at offset %d, is incomplete (a write cut short by a crash, "
            "never acknowledged, or damage); set aside as quarantine/%s",
            seq, offset, name,
        )


def recover_segment(directory: Path, seq: int, start: int, *, newest: bool, damage: Damage) -> tuple[int, int, int]:
    """Validate records from ``start``: the end of the valid data, and the number and bytes of valid records.

    A damaged record with valid ones after it is set aside and skipped. What
    ends the data is zero fill, stale bytes of a recycled segment or a record
    torn by a crash (in the ``newest`` segment only); a torn or damaged last
    record of this segment's own life is set aside too.
    """
    path = directory / segment_name(seq)
    offset = start
    records = size_bytes = 0
    if path.stat().st_size <= start:
        return start, 0, 0
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        size = len(buf)
        while offset < size:
            header = read_header(buf, seq, offset)
            if header is not None and is_whole(buf, header, size):
                records += 1
                size_bytes += header.end - offset
                offset = header.end
                continue
            resume = next_record(buf, seq, offset, size, header)
            if resume is None:
                damage.set_aside_tail(buf, seq, offset, header, newest)
                break
            damage.set_aside(buf, seq, offset, resume)
            offset = resume
    return offset, records, size_bytes
