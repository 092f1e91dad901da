"""The SQLite engine of the index, shared by every process of the gateway: WAL, one writer at a time, busy handling.

Readers run beside the one writer (WAL). Every write transaction (``engine.begin()``)
starts with ``BEGIN IMMEDIATE`` and waits up to the busy timeout for the write lock;
what is still locked after it (another process's very long write) is tried again
(``retry_busy``) by the callers that matter: the ingest commit and the schema's creation.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)

_BUSY_TIMEOUT_SECONDS = 30.0
_BUSY_RETRIES = 4


class _SqliteEngine(Engine):
    """An SQLite engine whose ``begin()`` (every write transaction) starts with ``BEGIN IMMEDIATE``.

    SQLite has one writer at a time, across the gateway's processes. A deferred transaction
    that reads and then writes may find, when it comes to write, that another process
    committed since its read began: SQLite then answers SQLITE_BUSY at once, without waiting
    (the busy timeout cannot help it). ``BEGIN IMMEDIATE`` takes the write lock first,
    waiting up to the busy timeout for it. Reads (``connect()``) stay as they were.
    """

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.connect() as conn:
            conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                yield conn


def _locked(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) and "locked" in str(exc.orig)


def retry_busy(action: Callable[[], None], what: str) -> None:
    """Run ``action``, again when SQLite was locked longer than its busy timeout (another process's long write)."""
    for attempt in range(_BUSY_RETRIES):
        try:
            action()
            return
        except OperationalError as exc:
            if not _locked(exc) or attempt == _BUSY_RETRIES - 1:
                raise
            log.warning("index busy (%s); trying again", what)
            time.sleep(0.1 * (attempt + 1))


def sqlite_engine(url: str) -> Engine:
    # hide_parameters: bound values (patient names, IDs) never appear in errors or logs.
    engine = create_engine(
        url,
        connect_args={"timeout": _BUSY_TIMEOUT_SECONDS, "check_same_thread": False},  # the busy timeout
        hide_parameters=True,
    )
    engine.__class__ = _SqliteEngine

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        # WAL lets readers run beside the writer (of any of the gateway's processes);
        # FULL makes each commit durable before the spool forgets the instances it holds.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Connection) -> None:
        # The driver begins a deferred transaction only before its first write, unless one is open.
        if conn.get_execution_options().get("sqlite_immediate"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    return engine
