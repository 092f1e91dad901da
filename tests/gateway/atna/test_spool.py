"""The audit spool: in order, on disk before append returns, numbered across restarts, one process at a time."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway.atna.spool import AuditSpool, SpoolLocked


def _make(item: str, number: int) -> bytes:
    return f"{number}:{item}".encode()


def _drain(spool: AuditSpool, batch: int = 7, max_bytes: int = 1 << 20) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    while spool.pending:
        got = spool.read(batch, max_bytes)
        assert got, "messages pending but none read"
        out.extend(got)
        spool.delivered(got[-1][0])
    return out


def test_messages_come_out_in_order_once_delivered_across_segments(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "s", segment_bytes=500)
    for round_ in range(40):
        spool.append([f"r{round_}e{i}" for i in range(5)], _make)
    assert spool.pending == 200 and len(list((tmp_path / "s").glob("*.seg"))) > 5
    out = _drain(spool, batch=9, max_bytes=300)
    assert [number for number, _ in out] == list(range(1, 201))
    assert all(message.startswith(f"{number}:".encode()) for number, message in out)
    assert len(list((tmp_path / "s").glob("*.seg"))) == 1  # delivered segments deleted
    spool.close()


def test_a_batch_read_but_not_delivered_is_read_again(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "s")
    spool.append(["a", "b", "c"], _make)
    assert spool.read(2) == [(1, b"1:a"), (2, b"2:b")]
    assert spool.read(2) == [(1, b"1:a"), (2, b"2:b")]  # not delivered: the same again
    spool.delivered(1)
    assert spool.read(5) == [(2, b"2:b"), (3, b"3:c")]
    spool.close()


def test_what_was_not_delivered_survives_a_restart_and_numbers_go_on(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "s")
    spool.append(["a", "b", "c"], _make)
    spool.delivered(spool.read(1)[0][0])
    spool.close()
    again = AuditSpool(tmp_path / "s")
    assert again.pending == 2 and again.read(10) == [(2, b"2:b"), (3, b"3:c")]
    again.append(["d"], _make)
    assert again.read(10)[-1] == (4, b"4:d")
    again.delivered(4)
    again.close()
    third = AuditSpool(tmp_path / "s")
    assert third.pending == 0
    third.append(["e"], _make)
    assert third.read(10) == [(5, b"5:e")]
    third.close()


def test_a_message_cut_short_by_a_crash_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "s")
    spool.append(["a", "b"], _make)
    spool.close()
    [segment] = (tmp_path / "s").glob("*.seg")
    with open(segment, "ab") as fh:
        fh.write(b"\x00\x00\x01\x00\x12\x34")  # a header half-written when the machine stopped
    again = AuditSpool(tmp_path / "s")
    assert again.read(10) == [(1, b"1:a"), (2, b"2:b")]
    again.append(["c"], _make)
    assert again.read(10)[-1] == (3, b"3:c")
    again.close()


def test_a_second_process_is_refused_and_the_files_are_private(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "s")
    spool.append(["a"], _make)
    spool.delivered(1)
    spool.append(["b"], _make)
    with pytest.raises(SpoolLocked):
        AuditSpool(tmp_path / "s")
    for path in (tmp_path / "s").iterdir():
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, path
    spool.close()
    AuditSpool(tmp_path / "s").close()  # free again once closed


def test_after_a_restart_reading_starts_deep_inside_a_large_segment(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "s")
    spool.append([f"{i:0100d}" for i in range(3000)], _make)  # ~330 kB: beyond any one read of the file
    spool.delivered(2900)
    spool.close()
    again = AuditSpool(tmp_path / "s")
    out = _drain(again, batch=50, max_bytes=1000)
    assert [number for number, _ in out] == list(range(2901, 3001))
    again.close()
