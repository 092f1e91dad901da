"""Bit rot in the spool loses the damaged record only: everything after it is still filed.

Records are located through the spool's own reading; bytes are then flipped
in the segment file as a failing disk would.  Offsets inside a record follow
its header: magic 0-3, segment number 4-11, meta length 12-15, data length
16-23, CRC of meta and data 24-27, CRC of the header 28-31, then meta, data.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
import uuid
import zlib
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage
from pynetdicom import AE

from gateway.ingest.spool import SpoolLog
from tests.conftest import s3_env
from tests.factory import ct_series
from tests.peers.ports import free_port

N = 30


def open_spool(path: Path, **kw) -> SpoolLog:
    options = {"segment_bytes": 1 << 20, "max_bytes": 1 << 30, "min_free_bytes": 0, **kw}
    return SpoolLog(path, **options).open()


def drain(spool: SpoolLog) -> list[tuple[dict, bytes]]:
    out = []
    while batch := spool.read_batch(max_records=7, max_bytes=1 << 20):
        spool.commit(batch)
        out += [(r.meta, bytes(r.data)) for r in batch]
    return out


def payload(i: int) -> bytes:
    # Ends in a non-zero byte: a record cut short keeps every byte written, and trailing zeros cannot be told
    # from zero fill (1 run in 256 of the damaged-tail tests failed on it).
    return os.urandom(249 + 13 * i) + b"\x5a"


def fill(path: Path, payloads: list[bytes], **kw) -> tuple[Path, list[tuple[int, int]]]:
    """Append one record per payload and return the segment they sit in and each record's extent."""
    spool = open_spool(path, **kw)
    for i, data in enumerate(payloads):
        spool.append({"n": i, "sop": f"1.2.826.0.1.{i}"}, data)
    batch = spool.read_batch(len(payloads), 1 << 30)  # read, never filed: they stay waiting
    assert len(batch) == len(payloads) and len({r.start.segment for r in batch}) == 1
    spool.close()
    return path / f"seg-{batch[0].start.segment:016d}.log", [(r.start.offset, r.end.offset) for r in batch]


def flip(segment: Path, offset: int, mask: int = 0x01) -> None:
    with open(segment, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ mask]))


def quarantined(path: Path) -> list[Path]:
    folder = path / "quarantine"
    return sorted(folder.iterdir()) if folder.exists() else []


FLIPS = {  # name: (record, position in it as a function of (start, end), bit mask)
    "magic": (4, lambda s, e: s, 0x01),
    "magic made the older format's": (4, lambda s, e: s + 3, 0x01),
    "segment number": (4, lambda s, e: s + 4, 0x01),
    "meta length": (4, lambda s, e: s + 12, 0x04),
    "meta length, implausible": (4, lambda s, e: s + 15, 0x80),
    "data length, shorter": (4, lambda s, e: s + 16, 0x20),
    "data length, past the next records": (4, lambda s, e: s + 17, 0x08),
    "data length, past the segment": (4, lambda s, e: s + 19, 0x04),
    "data length, implausible": (4, lambda s, e: s + 23, 0x80),
    "body checksum": (4, lambda s, e: s + 25, 0x10),
    "header checksum": (4, lambda s, e: s + 30, 0x02),
    "meta": (4, lambda s, e: s + 40, 0x01),
    "data": (4, lambda s, e: (s + e) // 2, 0x01),
    "last byte before the next record": (4, lambda s, e: e - 1, 0x01),
    "first byte of the next record": (5, lambda s, e: s, 0x01),
    "first record, meta length": (0, lambda s, e: s + 13, 0x01),
    "first record, data": (0, lambda s, e: e - 9, 0x40),
    "last record, magic": (N - 1, lambda s, e: s + 1, 0x01),
    "last record, segment number": (N - 1, lambda s, e: s + 5, 0x01),
    "last record, data length": (N - 1, lambda s, e: s + 17, 0x08),
    "last record, header checksum": (N - 1, lambda s, e: s + 28, 0x01),
    "last record, data": (N - 1, lambda s, e: e - 1, 0x01),
}


@pytest.mark.parametrize("where", FLIPS)
def test_one_flipped_byte_loses_that_record_only(tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture) -> None:
    payloads = [payload(i) for i in range(N)]
    segment, extents = fill(tmp_path, payloads)
    damaged, position, mask = FLIPS[where]
    start, end = extents[damaged]
    flip(segment, position(start, end), mask)
    record_bytes = segment.read_bytes()[start:end]

    with caplog.at_level(logging.WARNING, logger="gateway.ingest.spool"):
        spool = open_spool(tmp_path)
    assert spool.backlog_records == N - 1
    got = drain(spool)
    expected = [i for i in range(N) if i != damaged]
    assert [m["n"] for m, _ in got] == expected
    assert [d for _, d in got] == [payloads[i] for i in expected]
    assert spool.backlog_records == 0 and spool.backlog_bytes == 0

    [kept] = quarantined(tmp_path)  # exactly the damaged record, named by its segment and offset
    assert kept.name.startswith(f"{segment.name}.{start}.")
    assert kept.read_bytes() == record_bytes
    if damaged != N - 1:  # the last one cannot always be told from a write cut short by a crash
        assert spool.damaged_records == 1
        [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert f"segment {int(segment.name[4:-4])}" in error.getMessage() and f"offset {start}" in error.getMessage()
    spool.close()

    again = open_spool(tmp_path)  # all filed: nothing comes back, nothing is set aside twice
    assert again.backlog_records == 0 and drain(again) == []
    assert len(quarantined(tmp_path)) == 1


def test_damaged_segment_is_kept_until_every_valid_record_is_filed(tmp_path: Path) -> None:
    segment, extents = fill(tmp_path, [payload(i) for i in range(N)])
    flip(segment, (extents[4][0] + extents[4][1]) // 2)
    spool = open_spool(tmp_path)
    first = spool.read_batch(10, 1 << 30)
    spool.commit(first)
    spool.close()  # the rest of the segment still waits
    assert [r.meta["n"] for r in first] == [0, 1, 2, 3, *range(5, 11)]
    assert segment.exists()

    again = open_spool(tmp_path)
    assert again.backlog_records == N - 11
    assert [m["n"] for m, _ in drain(again)] == list(range(11, N))
    assert again.damaged_records == 0 and len(quarantined(tmp_path)) == 1  # set aside once


def test_several_damaged_records_each_lose_only_themselves(tmp_path: Path) -> None:
    segment, extents = fill(tmp_path, [payload(i) for i in range(N)])
    for n, offset in ((3, 2), (4, 14), (17, 27), (18, 100)):  # two pairs of neighbours
        flip(segment, extents[n][0] + offset)
    spool = open_spool(tmp_path)
    assert [m["n"] for m, _ in drain(spool)] == [i for i in range(N) if i not in (3, 4, 17, 18)]
    assert spool.damaged_records == 4 and len(quarantined(tmp_path)) == 4


def test_damage_found_while_running_is_set_aside_and_the_rest_filed(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    payloads = [payload(i) for i in range(N)]
    for i, data in enumerate(payloads):
        spool.append({"n": i}, data)
    [segment] = tmp_path.glob("seg-*.log")
    record = spool.read_batch(N, 1 << 30)[4]
    spool.rewind([record])  # records 4 and later are read again, after the disk damaged one
    flip(segment, record.start.offset + 7)
    assert [m["n"] for m, _ in drain(spool)] == [i for i in range(4, N) if i != 4]
    assert spool.damaged_records == 1 and spool.backlog_records == 0 and spool.backlog_bytes == 0
    assert [p.name for p in quarantined(tmp_path)] == [f"{segment.name}.{record.start.offset}.damaged.bin"]
    spool.append({"n": N}, b"after")  # appending and filing go on
    assert [m["n"] for m, _ in drain(spool)] == [N]


def test_damage_in_a_recycled_segment_with_stale_records(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=64 * 1024)
    for i in range(200):  # several segments of larger, older records, all filed and recycled
        spool.append({"old": i}, os.urandom(900))
    drain(spool)
    spool.close()
    assert list((tmp_path / "spare").glob("recycled-*.log"))
    payloads = [payload(i) for i in range(N)]
    segment, extents = fill(tmp_path, payloads, segment_bytes=64 * 1024)
    assert segment.stat().st_size > extents[-1][1] + 30_000  # written over a recycled segment: stale records follow
    flip(segment, extents[4][0] + 9)
    spool = open_spool(tmp_path, segment_bytes=64 * 1024)
    got = drain(spool)
    assert [m.get("n") for m, _ in got] == [i for i in range(N) if i != 4]
    assert spool.damaged_records == 1 and len(quarantined(tmp_path)) == 1


def _zero_filled_segment(path: Path) -> tuple[Path, list[tuple[int, int]], list[bytes]]:
    prepare = open_spool(path, preallocated_segments=1)
    deadline = time.monotonic() + 10
    while not list((path / "spare").glob("*.log")) and time.monotonic() < deadline:
        time.sleep(0.01)
    prepare.close()
    payloads = [payload(i) for i in range(N)]
    segment, extents = fill(path, payloads)  # its segment is the zero-filled spare
    assert segment.stat().st_size == 1 << 20
    return segment, extents, payloads


def test_damage_in_a_preallocated_segment(tmp_path: Path) -> None:
    segment, extents, _ = _zero_filled_segment(tmp_path)
    flip(segment, extents[4][0] + 18, 0x02)
    spool = open_spool(tmp_path)
    assert [m["n"] for m, _ in drain(spool)] == [i for i in range(N) if i != 4]
    assert spool.damaged_records == 1
    [kept] = quarantined(tmp_path)
    assert kept.stat().st_size == extents[4][1] - extents[4][0]


def test_torn_last_record_in_a_preallocated_segment_is_not_damage(tmp_path: Path) -> None:
    segment, extents, _ = _zero_filled_segment(tmp_path)
    start, end = extents[-1]
    with open(segment, "r+b") as fh:  # the last append was cut short: its second half never reached the disk
        fh.seek((start + end) // 2)
        fh.write(bytes(end - (start + end) // 2))
    flip(segment, end + 5000)  # bytes in the zero fill after the data are no record at all
    spool = open_spool(tmp_path)
    assert [m["n"] for m, _ in drain(spool)] == list(range(N - 1))
    assert spool.damaged_records == 0
    assert [p.name for p in quarantined(tmp_path)] == [f"{segment.name}.{start}.bin"]


def test_damage_after_the_data_changes_nothing(tmp_path: Path) -> None:
    segment, extents, _ = _zero_filled_segment(tmp_path)
    flip(segment, extents[-1][1] + 3)
    spool = open_spool(tmp_path)
    assert [m["n"] for m, _ in drain(spool)] == list(range(N))
    assert spool.damaged_records == 0 and quarantined(tmp_path) == []


# ------------------------------------------- the last record of an older segment

SMALL = 4096  # three or four records a segment: large objects fill a segment with one or two


def fill_segments(path: Path, payloads: list[bytes]) -> list[tuple[int, int, int]]:
    """Append one record per payload over several segments; each record's (segment, start, end)."""
    spool = open_spool(path, segment_bytes=SMALL)
    for i, data in enumerate(payloads):
        spool.append({"n": i}, data)
    batch = spool.read_batch(len(payloads), 1 << 30)  # read, never filed: they stay waiting
    spool.close()
    assert len(batch) == len(payloads)
    return [(r.start.segment, r.start.offset, r.end.offset) for r in batch]


def segment_file(path: Path, seq: int) -> Path:
    return path / f"seg-{seq:016d}.log"


OLDER_SEGMENT_TAIL = {  # name: (position in the record as a function of (start, end), bit mask)
    "magic": (lambda s, e: s + 1, 0x01),
    "meta length": (lambda s, e: s + 12, 0x04),
    "data length, shorter": (lambda s, e: s + 16, 0x20),
    "data length, past the segment": (lambda s, e: s + 19, 0x04),
    "body checksum": (lambda s, e: s + 25, 0x10),
    "header checksum": (lambda s, e: s + 29, 0x01),
    "meta": (lambda s, e: s + 40, 0x01),
    "data": (lambda s, e: (s + e) // 2, 0x01),
    "last byte": (lambda s, e: e - 1, 0x80),
}


@pytest.mark.parametrize("where", OLDER_SEGMENT_TAIL)
def test_damaged_last_record_of_an_older_segment_is_damage_not_a_torn_write(
    tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    payloads = [payload(i) * 3 for i in range(12)]
    extents = fill_segments(tmp_path, payloads)
    segments = sorted({seq for seq, _, _ in extents})
    assert len(segments) >= 3
    # The last record of the first segment: rotation synced it whole, and later segments hold records.
    damaged = max(i for i, (seq, _, _) in enumerate(extents) if seq == segments[0])
    seq, start, end = extents[damaged]
    segment = segment_file(tmp_path, seq)
    assert segment.stat().st_size == end  # nothing follows it in its segment
    position, mask = OLDER_SEGMENT_TAIL[where]
    flip(segment, position(start, end), mask)
    record_bytes = segment.read_bytes()[start:end]

    with caplog.at_level(logging.WARNING, logger="gateway.ingest.spool"):
        spool = open_spool(tmp_path, segment_bytes=SMALL)
    assert spool.damaged_records == 1  # counted: pacsgw_spool_damaged_records_total moves
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert f"segment {seq}" in error.getMessage() and f"offset {start}" in error.getMessage()
    assert not [r for r in caplog.records if "never acknowledged" in r.getMessage()]
    assert spool.backlog_records == len(payloads) - 1
    got = drain(spool)
    expected = [i for i in range(len(payloads)) if i != damaged]
    assert [m["n"] for m, _ in got] == expected
    assert [d for _, d in got] == [payloads[i] for i in expected]
    [kept] = quarantined(tmp_path)
    assert kept.name == f"{segment.name}.{start}.damaged.bin" and kept.read_bytes() == record_bytes
    spool.close()

    again = open_spool(tmp_path, segment_bytes=SMALL)  # all filed: nothing comes back, nothing set aside twice
    assert again.backlog_records == 0 and drain(again) == [] and again.damaged_records == 0
    assert len(quarantined(tmp_path)) == 1


def test_torn_write_stays_a_torn_write_once_later_segments_follow(tmp_path: Path) -> None:
    payloads = [payload(i) * 3 for i in range(8)]
    extents = fill_segments(tmp_path, payloads)
    seq, start, end = extents[-1]
    segment = segment_file(tmp_path, seq)
    with open(segment, "r+b") as fh:  # the last append was cut short by a crash
        fh.truncate((start + end) // 2)
    spool = open_spool(tmp_path, segment_bytes=SMALL)  # its segment is the newest: a torn write
    assert spool.damaged_records == 0
    for i in range(8, 14):  # acknowledged into later segments, then the gateway stops again before filing
        spool.append({"n": i}, payload(i) * 3)
    spool.close()

    again = open_spool(tmp_path, segment_bytes=SMALL)
    assert [m["n"] for m, _ in drain(again)] == [*range(7), *range(8, 14)]
    assert again.damaged_records == 0
    assert [p.name for p in quarantined(tmp_path)] == [f"{segment.name}.{start}.bin"]


# ------------------------------------------------------------ older format


def write_older_format_segment(path: Path, seq: int, records: list[tuple[dict, bytes]]) -> list[int]:
    """A segment as spools wrote it before records had a header checksum ("PGS2")."""
    out = bytearray()
    starts = []
    for meta, data in records:
        meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
        starts.append(len(out))
        crc = zlib.crc32(data, zlib.crc32(meta_bytes))
        out += struct.pack("<4sQIIQ", b"PGS2", seq, crc, len(meta_bytes), len(data)) + meta_bytes + data
    path.mkdir(parents=True, exist_ok=True)
    (path / f"seg-{seq:016d}.log").write_bytes(bytes(out))
    (path / "checkpoint").write_text(json.dumps({"segment": seq, "offset": 0}))
    return starts


@pytest.mark.parametrize("damage", [None, 2, 14])
def test_segments_waiting_at_an_upgrade_are_filed(tmp_path: Path, damage: int | None) -> None:
    old = [({"n": i}, payload(i)) for i in range(10)]
    starts = write_older_format_segment(tmp_path, 7, old)
    if damage is not None:
        flip(tmp_path / "seg-0000000000000007.log", starts[4] + damage)
    spool = open_spool(tmp_path)
    lost = [] if damage is None else [4]
    assert spool.backlog_records == 10 - len(lost)
    spool.append({"n": 10}, b"new")
    assert [m["n"] for m, _ in drain(spool)] == [i for i in range(11) if i not in lost]
    assert spool.damaged_records == len(lost) and len(quarantined(tmp_path)) == len(lost)
    spool.close()
    again = open_spool(tmp_path)
    assert again.backlog_records == 0 and drain(again) == []


# ------------------------------------------------------------- end to end


def test_gateway_files_every_instance_but_the_damaged_one(start_gateway, s3_server) -> None:
    bucket = f"damage-{uuid.uuid4().hex[:8]}"
    store_down = {**s3_env(s3_server, bucket), "PACSGW_S3_ENDPOINT": f"127.0.0.1:{free_port()}"}
    gateway = start_gateway({**store_down, "PACSGW_S3_CONNECT_TIMEOUT": "0.5"}, wait_ready=False)
    series = ct_series(N, size=64)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    assert assoc.is_established
    statuses = [assoc.send_c_store(ds).Status for ds in series]
    assoc.release()
    assert statuses == [0x0000] * N  # all acknowledged, into the spool: the object store is down
    gateway.kill()

    spool_dir = gateway.settings().spool_path
    reader = SpoolLog(spool_dir, segment_bytes=8 << 20, max_bytes=1 << 40, min_free_bytes=0).open()
    records = reader.read_batch(N, 1 << 30)
    reader.close()
    assert [r.meta["record"]["sop_instance_uid"] for r in records] == [ds.SOPInstanceUID for ds in series]
    fifth = records[4]
    segment = spool_dir / f"seg-{fifth.start.segment:016d}.log"
    flip(segment, fifth.start.offset + fifth.size // 2)

    gateway.env.update(s3_env(s3_server, bucket))  # the object store is back
    gateway.start()
    expected = [ds.SOPInstanceUID for i, ds in enumerate(series) if i != 4]
    deadline = time.monotonic() + 20
    while len(gateway.open_index().all_instances()) < N - 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    gateway.wait_idle(timeout=10)
    rows = gateway.open_index().all_instances()
    assert sorted(r["sop_instance_uid"] for r in rows) == sorted(expected)
    store = gateway.open_store()
    assert sorted(store.list_keys("studies/")) == sorted(r["object_key"] for r in rows)
    for row in rows:
        assert len(store.get(row["object_key"])) == row["size"]

    [kept] = (spool_dir / "quarantine").iterdir()
    assert kept.name == f"{segment.name}.{fifth.start.offset}.damaged.bin" and kept.stat().st_size == fifth.size
    status, metrics = gateway.get("/metrics")
    assert status == 200 and "pacsgw_spool_damaged_records_total 1.0" in metrics
    [line] = [x for x in gateway.log_tail(400).splitlines() if " ERROR " in x and "damaged record" in x]
    assert f"offset {fifth.start.offset}" in line and series[4].SOPInstanceUID not in line
