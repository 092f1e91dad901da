"""Whether anything was committed to the index since last asked, told without a query (SQLite only).

SQLite's ``PRAGMA data_version`` changes when any other connection, in this
process or another, commits to the database file; in WAL mode reading it
reads the shared-memory WAL index, no page of the file. The HTTP server
uses it to trust a token it checked a moment ago only while nothing at all
was committed since: a revocation, from any process, is a commit, so it
takes effect at the next request. PostgreSQL has no such counter here, so
there every request looks its token up.
"""

from __future__ import annotations

import sqlite3
import threading

from sqlalchemy import Engine


class CommitWatch:
    """A connection of its own to the SQLite index, that only ever reads ``PRAGMA data_version``."""

    def __init__(self, engine: Engine) -> None:
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        if database and database != ":memory:":
            self._connection = sqlite3.connect(database, check_same_thread=False, isolation_level=None)

    def version(self) -> int | None:
        """A number that changes with every commit made on another connection; None where it cannot be told."""
        if self._connection is None:
            return None
        with self._lock:
            row = self._connection.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
