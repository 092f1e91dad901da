"""One supervised process of the gateway: a worker (DICOM + HTTP on the shared ports, its spool, its filer) or the HL7 process.

The supervisor (gateway.supervisor) starts each as ``python -m gateway serve --child ROLE``
with the settings it loaded on the child's standard input (pickled: exactly the same
settings, flags included). A child stops on SIGTERM (SIGINT is the supervisor's, which
stops the children in order) and when its supervisor is gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
import sys
from typing import Any

from aiohttp import web

from gateway.http.https import listener_context
from gateway.ingest.spool import SpoolLog, SpoolRecord
from gateway.service import Gateway, Role
from gateway.settings import Settings
from gateway.worker_board import BOARD, Publisher, WorkerBoard, board_path

log = logging.getLogger(__name__)

EXIT_START_FAILED = 3  # the supervisor does not restart a child that could not start the first time
_HEARTBEAT_SECONDS = 0.5


def parse_role(text: str, workers: int) -> Role:
    name, _, index = text.partition("-")
    if name not in ("worker", "hl7") or (name == "worker" and not index.isdigit()):
        raise ValueError(f"unknown child role {text!r}")
    return Role(name, int(index or 0), workers)


class PublishedSpool(SpoolLog):
    """A worker's spool that tells the board its backlog after every change, before the change is acknowledged."""

    publisher: Publisher | None = None

    def _changed(self) -> None:
        if self.publisher is not None:
            self.publisher.changed()

    def append(self, meta: dict[str, Any], data: bytes | bytearray | memoryview) -> None:
        super().append(meta, data)
        self._changed()

    def commit(self, records: list[SpoolRecord]) -> None:
        super().commit(records)
        self._changed()

    def read_batch(self, max_records: int, max_bytes: int) -> list[SpoolRecord]:
        batch = super().read_batch(max_records, max_bytes)  # damaged records found here leave the backlog
        self._changed()
        return batch


async def _run(settings: Settings, role: Role, board: WorkerBoard | None) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the supervisor orders the stop
    parent = os.getppid()
    gateway = Gateway(settings, role, spool_class=PublishedSpool)
    publisher = None
    if board is not None and role.receives:
        board.begin(role.index)
        spool = gateway.spool
        publisher = Publisher(board, role.index, gateway.backlog, gateway.metrics.sample)
        assert isinstance(spool, PublishedSpool)
        spool.publisher = publisher
        publisher.changed()
    runner: web.AppRunner | None = None
    if role.receives:
        app = gateway.http_app()
        if board is not None:
            app[BOARD] = board
        runner = web.AppRunner(app, access_log=None)  # query strings carry patient identifiers
        await runner.setup()  # starts the gateway (its cleanup context)
        tls = listener_context(settings)  # the supervisor made (and checked) it before it started us
        if tls is not None:
            gateway.tls_contexts.append(tls)
        site = web.TCPSite(
            runner, settings.http.host, settings.http.port, reuse_port=True, ssl_context=tls.context if tls else None
        )
        await site.start()
    else:
        await gateway.start()
        # No HTTP app here to run the audit writer (its cleanup context): the HL7 listener's events need it too.
        audit_task = asyncio.create_task(gateway.audit.run())
    if board is not None and role.receives:
        board.ready(role.index)
    log.info("%s-%d ready (pid %d)", role.name, role.index, os.getpid())
    try:
        while not done.is_set():
            if os.getppid() != parent:
                log.warning("supervisor gone; stopping")
                break
            if publisher is not None and board is not None:
                board.beat(role.index)
                board.associations(role.index, gateway.dicom.active)
                publisher.changed()
            gateway.metrics.sample()
            try:
                await asyncio.wait_for(done.wait(), _HEARTBEAT_SECONDS)
            except TimeoutError:
                pass
    finally:
        if runner is not None:
            await runner.cleanup()
        else:
            await gateway.stop()
            audit_task.cancel()
            await asyncio.gather(audit_task, return_exceptions=True)
            await gateway.audit.flush()
        if publisher is not None:
            publisher.changed()


def run_child(role_text: str) -> int:
    """The body of ``serve --child ROLE``: the settings come pickled on standard input."""
    from gateway.logging_setup import configure_logging

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload asked for before the listeners open: nothing to read yet
    settings: Settings = pickle.load(sys.stdin.buffer)
    configure_logging(settings.log_level)
    role = parse_role(role_text, settings.serve.process_count)
    board = WorkerBoard(board_path(settings.data_path), role.workers) if role.name == "worker" else None
    try:
        asyncio.run(_run(settings, role, board))
    except OSError as exc:
        print(f"pacs-gateway: {role_text} cannot start: {exc}", file=sys.stderr)
        return EXIT_START_FAILED
    except Exception as exc:
        print(f"pacs-gateway: {role_text} stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_START_FAILED
    finally:
        if board is not None:
            board.close()
    return 0
