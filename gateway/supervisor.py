"""The supervisor of ``pacs-gateway serve --workers N``: starts the gateway's processes, restarts them, stops them in order.

Its children, each ``python -m gateway serve --child ROLE`` (gateway.worker_process):

- ``worker-0`` .. ``worker-<N-1>``: each receives DICOM on the shared DICOM port and serves
  HTTP on the shared HTTP port (SO_REUSEPORT: the kernel spreads connections over them),
  into a spool of its own, ``<spool>/worker-<i>``, filed by a filer thread of its own;
- ``hl7``: the HL7 listener and the EMR link (outbox deliveries, study publication), one process.

A child that dies is started again with the same index, hence the same spool, which
its successor recovers and files before it receives again; the wait before a restart
doubles from half a second (``serve.restart_backoff_max_seconds`` at most) while the
child keeps dying young. A child that dies before it was ever ready fails the start:
a port in use is a configuration error, not something to retry. On SIGTERM or SIGINT
the workers are stopped first (no new instances; what is spooled stays spooled), then
the HL7 process, each given ``serve.stop_timeout_seconds``.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from gateway.metrics import MULTIPROC_ENV, multiprocess_dir
from gateway.settings import Settings
from gateway.worker_board import WorkerBoard, board_path

log = logging.getLogger(__name__)

_BACKOFF_INITIAL = 0.5
_HEALTHY_AFTER = 30.0  # a child that lived this long starts the backoff over
_START_TIMEOUT = 120.0


class StartError(Exception):
    """The gateway's processes could not be started (a port in use, a child that died at start)."""


@dataclass
class Child:
    """One supervised process: its role, its current process, and when to start it again."""

    role: str
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = _BACKOFF_INITIAL
    restart_at: float | None = None
    ever_ready: bool = False
    restarts: int = field(default=0)


def check_port(host: str, port: int, what: str) -> None:
    """Fail now, with the port's name, when another program holds it (our children bind it with SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            reason = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise StartError(f"{what} {host}:{port}: {reason}") from exc


class Supervisor:
    """Starts, watches and stops the children of one gateway (see the module's description)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.workers = settings.serve.process_count
        self.children = [Child(f"worker-{i}") for i in range(self.workers)] + [Child("hl7")]
        self._stop = threading.Event()
        self._settings_blob = pickle.dumps(settings)
        self.board: WorkerBoard | None = None

    # ------------------------------------------------------------------ run

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)
        s = self.settings
        if s.dicom_tls.plain:
            check_port(s.dicom.host, s.dicom.port, "DICOM port")
        if s.dicom_tls.enabled:
            check_port(s.dicom.host, s.dicom_tls.port, "DICOM TLS port")
        check_port(s.http.host, s.http.port, "HTTP port")
        if s.hl7.port:
            check_port(s.hl7.host, s.hl7.port, "HL7 port")
        self._open_index()
        self._prepare_metrics()
        self.board = WorkerBoard.create(board_path(s.data_path), self.workers)
        log.info("supervisor (pid %d) starting %d worker(s) and the HL7 process", os.getpid(), self.workers)
        try:
            for child in self.children:
                self._spawn(child)
            self._wait_started()
            while not self._stop.is_set():
                self._watch()
                self._stop.wait(0.2)
        finally:
            self._stop_all()
            self.board.close()
        log.info("supervisor stopped")

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stop.set()

    def _on_hangup(self, _signum: int, _frame: object) -> None:
        """SIGHUP: every child reads its TLS certificates again (its own handler), none restarts."""
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGHUP)

    def _open_index(self) -> None:
        """Create or bring up the index once, before the children open it (and fail the start if it cannot be)."""
        from storage.index.database import IndexDatabase

        self.settings.data_path.mkdir(parents=True, exist_ok=True)
        IndexDatabase.open(self.settings.index_url).close()

    def _prepare_metrics(self) -> None:
        """Set before any child imports prometheus_client; files of a previous run are stale."""
        directory = multiprocess_dir(self.settings.data_path)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        os.environ[MULTIPROC_ENV] = str(directory)

    def _spawn(self, child: Child) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        child.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--child", child.role], stdin=subprocess.PIPE, env=env
        )
        assert child.proc.stdin is not None
        child.proc.stdin.write(self._settings_blob)
        child.proc.stdin.close()
        child.started = time.monotonic()
        child.restart_at = None
        log.info("%s started (pid %d)", child.role, child.proc.pid)

    def _ready(self, child: Child) -> bool:
        if child.role == "hl7":  # no board slot: alive after its first seconds counts
            return child.proc is not None and child.proc.poll() is None
        assert self.board is not None
        index = int(child.role.removeprefix("worker-"))
        slot = self.board.view()[index]
        return child.proc is not None and slot["pid"] == child.proc.pid and slot["alive"]

    def _wait_started(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        waiting = list(self.children)
        while waiting and not self._stop.is_set():
            for child in list(waiting):
                assert child.proc is not None
                code = child.proc.poll()
                if code is not None:
                    raise StartError(f"{child.role} exited during start-up (code {code}); see its message above")
                if self._ready(child):
                    child.ever_ready = True
                    waiting.remove(child)
            if time.monotonic() > deadline:
                raise StartError(f"{', '.join(c.role for c in waiting)} not ready within {_START_TIMEOUT:g} s")
            self._stop.wait(0.1)
        log.info("gateway ready: %d worker(s) and the HL7 process", self.workers)

    # ---------------------------------------------------------------- watch

    def _watch(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None and (code := child.proc.poll()) is not None:
                self._reaped(child, code, now)
            if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                try:
                    self._spawn(child)
                except OSError as exc:  # a failed fork, or a child gone before it read its settings: stop nothing
                    log.error("%s could not be started again (%s)", child.role, exc)
                    if child.proc is None:  # never started: try again later
                        child.restart_at = now + child.backoff
                        child.backoff = min(child.backoff * 2, self.settings.serve.restart_backoff_max_seconds)
                    # else it started and died at once: the next watch reaps it and restarts it with backoff

    def _reaped(self, child: Child, code: int, now: float) -> None:
        assert child.proc is not None
        pid = child.proc.pid
        self._forget(child, pid, restarted=True)
        if now - child.started > _HEALTHY_AFTER:
            child.backoff = _BACKOFF_INITIAL
        log.warning("%s (pid %d) died (code %d); restarting in %.1f s", child.role, pid, code, child.backoff)
        child.restart_at = now + child.backoff
        child.backoff = min(child.backoff * 2, self.settings.serve.restart_backoff_max_seconds)
        child.proc = None

    def _forget(self, child: Child, pid: int, *, restarted: bool) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # its live gauges no longer count
        if child.role.startswith("worker-") and self.board is not None:
            self.board.stopped(int(child.role.removeprefix("worker-")), pid, restarted=restarted)

    # ----------------------------------------------------------------- stop

    def _stop_all(self) -> None:
        workers = [c for c in self.children if c.role != "hl7"]
        hl7 = [c for c in self.children if c.role == "hl7"]
        for group in (workers, hl7):  # receivers first: the EMR link outlives what they still commit
            for child in group:
                if child.proc is not None and child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.settings.serve.stop_timeout_seconds
            for child in group:
                if child.proc is None:
                    continue
                try:
                    child.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("%s (pid %d) did not stop in time; killed", child.role, child.proc.pid)
                    child.proc.kill()
                    child.proc.wait()
                self._forget(child, child.proc.pid, restarted=False)
                child.proc = None
