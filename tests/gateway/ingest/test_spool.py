from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from gateway.ingest.spool import SpoolFull, SpoolLocked, SpoolLog


def open_spool(path: Path, **kw) -> SpoolLog:
    options = {"segment_bytes": 4096, "max_bytes": 1 << 30, "min_free_bytes": 0, **kw}
    return SpoolLog(path, **options).open()


def die(spool: SpoolLog) -> None:
    """The process holding ``spool`` dies: nothing is saved, and the kernel releases its lock."""
    os.close(spool._lock_fd)


def drain(spool: SpoolLog) -> list[tuple[dict, memoryview]]:
    out = []
    while batch := spool.read_batch(max_records=7, max_bytes=1 << 20):
        spool.commit(batch)
        out += [(r.meta, r.data) for r in batch]
    return out


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    payloads = [os.urandom(300 + i) for i in range(40)]  # ~12 KB: spans several 4 KB segments
    for i, data in enumerate(payloads):
        spool.append({"n": i}, data)
    assert spool.backlog_records == 40
    got = drain(spool)
    assert [m["n"] for m, _ in got] == list(range(40))
    assert [d for _, d in got] == payloads
    assert spool.backlog_records == 0 and spool.backlog_bytes == 0
    spool.close()
    assert len(list(tmp_path.glob("seg-*.log"))) <= 2  # consumed segments are deleted


def test_unfiled_records_survive_a_restart_and_filed_ones_do_not_return(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for i in range(10):
        spool.append({"n": i}, b"x" * 100)
    spool.commit(spool.read_batch(4, 1 << 20))
    spool.close()

    again = open_spool(tmp_path)
    assert again.backlog_records == 6
    assert [m["n"] for m, _ in drain(again)] == [4, 5, 6, 7, 8, 9]


def test_crash_without_checkpoint_replays_rather_than_loses(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for i in range(5):
        spool.append({"n": i}, b"y" * 50)
    spool.commit(spool.read_batch(2, 1 << 20))  # checkpoint may lag: not saved yet
    die(spool)  # no close(): the records since the saved checkpoint come back
    again = open_spool(tmp_path)
    assert [m["n"] for m, _ in drain(again)][-3:] == [2, 3, 4]


@pytest.mark.parametrize("keep", [5, 30, 200])
def test_torn_write_is_set_aside_and_never_delivered(tmp_path: Path, keep: int) -> None:
    spool = open_spool(tmp_path, segment_bytes=1 << 20)
    for i in range(4):
        spool.append({"n": i}, bytes([i]) * 300)
    spool.close()
    [segment] = tmp_path.glob("seg-*.log")
    record = segment.stat().st_size // 4
    with open(segment, "r+b") as fh:  # the fourth append was cut short by a crash
        fh.truncate(3 * record + keep)
    again = open_spool(tmp_path)
    assert [m["n"] for m, _ in drain(again)] == [0, 1, 2]
    quarantine = tmp_path / "quarantine"
    kept = list(quarantine.iterdir()) if quarantine.exists() else []
    assert len(kept) == (1 if keep >= 32 else 0)  # a torn 32-byte header alone holds nothing to keep


def test_recycled_segments_never_replay_stale_records(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=2048, preallocated_segments=2)
    for i in range(30):
        spool.append({"n": i}, os.urandom(400))
    assert [m["n"] for m, _ in drain(spool)] == list(range(30))
    spool.close()
    assert list((tmp_path / "spare").glob("*.log"))  # consumed segments wait for reuse
    again = open_spool(tmp_path, segment_bytes=2048)
    assert again.backlog_records == 0
    for i in range(3):  # written over a recycled segment full of older records
        again.append({"n": 100 + i}, os.urandom(10))
    again.close()
    third = open_spool(tmp_path, segment_bytes=2048)
    assert [m["n"] for m, _ in drain(third)] == [100, 101, 102]
    third.close()
    (tmp_path / "checkpoint").unlink()  # even without its checkpoint, nothing stale comes back
    fourth = open_spool(tmp_path, segment_bytes=2048)
    assert [m["n"] for m, _ in drain(fourth)] == [100, 101, 102]


def test_spares_are_prepared_in_the_background(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=1 << 20, preallocated_segments=2)
    deadline = time.monotonic() + 10
    while len(list((tmp_path / "spare").glob("*.log"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    spool.close()
    spares = sorted((tmp_path / "spare").glob("*.log"))
    assert len(spares) == 2 and all(p.stat().st_size == 1 << 20 for p in spares)


def test_damaged_record_is_never_delivered(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=1 << 20)
    for i in range(3):
        spool.append({"n": i}, bytes([i]) * 40)
    spool.close()
    [segment] = tmp_path.glob("seg-*.log")
    data = bytearray(segment.read_bytes())
    data[-5] ^= 0xFF  # flip a byte in the last record's payload
    segment.write_bytes(bytes(data))
    again = open_spool(tmp_path)
    assert [m["n"] for m, _ in drain(again)] == [0, 1]


def test_limits_refuse_rather_than_overfill(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_bytes=1000)
    spool.append({}, b"a" * 400)
    spool.append({}, b"a" * 400)
    with pytest.raises(SpoolFull):
        spool.append({}, b"a" * 400)
    spool.commit(spool.read_batch(1, 1 << 20))
    spool.append({}, b"a" * 400)  # room again once something is filed
    spool.close()
    full_disk = open_spool(tmp_path / "disk", min_free_bytes=1 << 62)
    with pytest.raises(SpoolFull, match="free disk space"):
        full_disk.append({}, b"a")


def test_rewind_offers_a_failed_batch_again(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for i in range(4):
        spool.append({"n": i}, b"q")
    batch = spool.read_batch(3, 1 << 20)
    spool.rewind(batch)
    assert [r.meta["n"] for r in spool.read_batch(10, 1 << 20)] == [0, 1, 2, 3]


def test_concurrent_appenders_share_syncs_and_lose_nothing(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=64 * 1024)

    def writer(w: int) -> None:
        for i in range(50):
            spool.append({"w": w, "i": i}, os.urandom(500))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = drain(spool)
    assert sorted((m["w"], m["i"]) for m, _ in got) == [(w, i) for w in range(4) for i in range(50)]
    for w in range(4):  # each writer's records keep their order
        assert [m["i"] for m, _ in got if m["w"] == w] == list(range(50))


def test_one_spool_is_open_in_one_place_at_a_time(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append({"n": 0}, b"z" * 10)
    with pytest.raises(SpoolLocked, match=f"in use by a running process \\(pid {os.getpid()}\\)"):
        open_spool(tmp_path)
    spool.close()
    again = open_spool(tmp_path)  # closed: free again
    assert [m["n"] for m, _ in drain(again)] == [0]
    again.close()
