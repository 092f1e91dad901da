"""What each worker process of a supervised gateway publishes for the others: one shared-memory slot per worker.

With ``serve.workers`` above 1, any worker may answer ``/health``, so each
must see every worker's spool backlog. A worker writes its slot whenever its
backlog changes, before the C-STORE or STOW-RS that changed it is answered
(see ``PublishedSpool``), so a backlog of 0 read from the board means every
acknowledged instance is stored and indexed. A slot is kept across a worker's
restart: the dead worker's last backlog stays on the board until its
successor has recovered the same spool and published it again.

The board is a small file under the data directory, mapped by every process;
each 8-byte field is written with one aligned store, so readers never see a
torn number.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

# pid, state, heartbeat (wall clock), started (wall clock), backlog records, backlog bytes, associations, restarts
_SLOT = struct.Struct("<qqddqqqq")
_SLOT_SIZE = 64
STARTING, READY, STOPPED = 0, 1, 2
_STATES = {STARTING: "starting", READY: "ready", STOPPED: "stopped"}
_HEARTBEAT_STALE = 5.0  # seconds without a heartbeat: the worker is taken for dead


def board_path(data_path: Path) -> Path:
    return data_path / "run" / "workers"


class WorkerBoard:
    """The shared slots of one supervised gateway's workers (``<data>/run/workers``)."""

    def __init__(self, path: Path, workers: int) -> None:
        self.path = path
        self.workers = workers
        self._fd = os.open(path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, _SLOT_SIZE * workers)
        self._lock = threading.Lock()

    @classmethod
    def create(cls, path: Path, workers: int) -> WorkerBoard:
        """A fresh board (the supervisor, at its start): every slot zero."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(bytes(_SLOT_SIZE * workers))
        os.replace(tmp, path)
        return cls(path, workers)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    def _read(self, slot: int) -> tuple[Any, ...]:
        return _SLOT.unpack_from(self._map, slot * _SLOT_SIZE)

    def _write(self, slot: int, field: int, fmt: str, value: float) -> None:
        struct.pack_into(fmt, self._map, slot * _SLOT_SIZE + field * 8, value)

    # ------------------------------------------------------------ a worker

    def begin(self, slot: int) -> None:
        """A worker taking its slot (its spool not yet recovered: the last backlog stays)."""
        with self._lock:
            self._write(slot, 1, "<q", STARTING)
            self._write(slot, 0, "<q", os.getpid())
            self._write(slot, 3, "<d", time.time())
            self.beat(slot)

    def ready(self, slot: int) -> None:
        self._write(slot, 1, "<q", READY)
        self.beat(slot)

    def beat(self, slot: int) -> None:
        self._write(slot, 2, "<d", time.time())

    def publish(self, slot: int, records: int, size: int) -> None:
        self._write(slot, 4, "<q", records)
        self._write(slot, 5, "<q", size)

    def associations(self, slot: int, count: int) -> None:
        self._write(slot, 6, "<q", count)

    # -------------------------------------------------------- the supervisor

    def stopped(self, slot: int, pid: int, *, restarted: bool) -> None:
        """The supervisor has reaped the worker ``pid`` of ``slot``."""
        with self._lock:
            if self._read(slot)[0] == pid:
                self._write(slot, 1, "<q", STOPPED)
            if restarted:
                self._write(slot, 7, "<q", self._read(slot)[7] + 1)

    # -------------------------------------------------------------- readers

    def view(self) -> list[dict[str, Any]]:
        now = time.time()
        out = []
        for slot in range(self.workers):
            pid, state, beat, started, records, size, associations, restarts = self._read(slot)
            alive = state == READY and now - beat < _HEARTBEAT_STALE
            out.append(
                {
                    "worker": slot,
                    "pid": pid,
                    "state": _STATES.get(state, "unknown") if state != READY or alive else "silent",
                    "alive": alive,
                    "started": started,
                    "backlog_instances": records,
                    "backlog_bytes": size,
                    "associations": associations,
                    "restarts": restarts,
                }
            )
        return out

    def backlog(self) -> tuple[int, int]:
        records = size = 0
        for slot in range(self.workers):
            row = self._read(slot)
            records += row[4]
            size += row[5]
        return records, size


class Publisher:
    """Writes one worker's slot: its backlog (from ``backlog()``, summed over its spools) whenever told."""

    def __init__(
        self, board: WorkerBoard, slot: int, backlog: Callable[[], tuple[int, int]], also: Callable[[], None] = lambda: None
    ) -> None:
        self.board = board
        self.slot = slot
        self._backlog = backlog
        self._also = also  # the gauges of the metrics, written with the board
        self._lock = threading.Lock()

    def changed(self) -> None:
        # Read and written under one lock: the value written last is read last, never a stale one.
        with self._lock:
            records, size = self._backlog()
            self.board.publish(self.slot, records, size)
            self._also()


BOARD = web.AppKey("worker_board", WorkerBoard)  # set on a supervised worker's HTTP app only
# This process's spool backlog, left-over spools being filed included: (instances, bytes).
BACKLOG: web.AppKey[Callable[[], tuple[int, int]]] = web.AppKey("spool_backlog")
