"""Whether anything was committed to the index since last asked, told without a query (SQLite only).

SQLite's ``PRAGMA data_version`` changes when any other connection, in this
process or another, commits to the database file; in WAL mode reading it
reads the shared-memory WAL index, no page of the file. The HTTP server
uses it to trust a token it checked a moment ago only while nothing at all
was committed since: a revocation, from any process, is a commit, so it
takes effect at the next request. PostgreSQL has no such counter here, so
there every request looks its token up.

The counter row ``instance_changes``, moved by triggers on every change to
the tables an instance's location is read from, tells the instance location
cache whether a commit was one of those (storage.index.instance_locations).
"""

from __future__ import annotations

import sqlite3
import threading

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

# Tables whose every change moves the counter read by storage.index.instance_locations.
_WATCHED = ("studies", "series", "instances", "instance_pixels")

COUNTER_TABLE = "instance_changes"


def install_change_counter(conn: Connection) -> None:
    """Create the counter and its triggers on SQLite (idempotent; nothing on other databases)."""
    if conn.dialect.name != "sqlite":
        return
    conn.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {COUNTER_TABLE} (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL)"
    )
    conn.exec_driver_sql(f"INSERT OR IGNORE INTO {COUNTER_TABLE} (id, n) VALUES (1, 0)")
    for table in _WATCHED:
        for event in ("INSERT", "UPDATE", "DELETE"):
            conn.exec_driver_sql(
                f"CREATE TRIGGER IF NOT EXISTS {COUNTER_TABLE}_{table}_{event.lower()} AFTER {event} ON {table} "
                f"BEGIN UPDATE {COUNTER_TABLE} SET n = n + 1 WHERE id = 1; END"
            )


class CommitWatch:
    """A connection of its own to the SQLite index, that only ever reads: ``PRAGMA data_version`` and the counter."""

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

    def changes(self, table: str = COUNTER_TABLE) -> int | None:
        """The value of a counter row kept by triggers (install_change_counter); None where there is none."""
        if self._connection is None:
            return None
        try:
            with self._lock:
                row = self._connection.execute(f"SELECT n FROM {table} WHERE id = 1").fetchone()
        except sqlite3.Error:
            return None  # an index made before the counter existed, not opened by this release yet
        return int(row[0]) if row is not None else None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
