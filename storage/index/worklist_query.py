"""Queries of the Modality Worklist (scheduled procedure steps) for the protocols that ask them: MWL C-FIND.
The SQL is ``storage.index.worklist``'s; this is its entry point, with one error for an index that cannot answer."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from storage.index.errors import IndexDatabaseError
from storage.index.worklist import WorklistQuery, search, validate


class WorklistQueries:
    """Validates and runs :class:`WorklistQuery` queries; raises InvalidQuery or IndexDatabaseError."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @staticmethod
    def validate(query: WorklistQuery) -> None:
        """Raise InvalidQuery for a matching value that cannot be used, before any response is sent."""
        validate(query)

    def search(self, query: WorklistQuery) -> list[dict[str, Any]]:
        """Scheduled steps matching the query, earliest first (see ``storage.index.worklist.search``)."""
        try:
            with self.engine.connect() as conn:
                return search(conn, query)
        except SQLAlchemyError as exc:
            raise IndexDatabaseError(f"worklist query failed: {type(exc).__name__}") from exc
