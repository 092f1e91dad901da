"""Queries of the study hierarchy (patient, study, series, image) for every protocol that asks them: C-FIND,
the instance lists of C-MOVE and C-GET, and QIDO-RS. The SQL is ``storage.index.hierarchy``'s; this is its
entry point, so that callers build no SQL and see one error for an index that cannot answer."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from storage.index.errors import IndexDatabaseError
from storage.index.hierarchy import ATTRIBUTES, HierarchyQuery, condition, count, search


class StudyQueries:
    """Validates and runs :class:`HierarchyQuery` queries; raises InvalidQuery or IndexDatabaseError."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @staticmethod
    def check(keyword: str, value: str) -> None:
        """Raise InvalidQuery when ``value`` cannot match ``keyword`` (a bad date, range, UID list...)."""
        if value.strip("*"):
            condition(ATTRIBUTES[keyword], value)

    def validate(self, query: HierarchyQuery) -> None:
        """Raise InvalidQuery for the first matching value that cannot be used, before any response is sent."""
        for keyword, value in query.matches.items():
            self.check(keyword, value)

    def search(self, query: HierarchyQuery) -> list[dict[str, Any]]:
        """The matches at the query's level (see ``storage.index.hierarchy.search``)."""
        try:
            with self.engine.connect() as conn:
                return list(search(conn, query))
        except SQLAlchemyError as exc:
            raise IndexDatabaseError(f"query failed: {type(exc).__name__}") from exc

    def count(self, query: HierarchyQuery) -> int:
        """How many matches the query has, paging aside."""
        try:
            with self.engine.connect() as conn:
                return count(conn, query)
        except SQLAlchemyError as exc:
            raise IndexDatabaseError(f"query failed: {type(exc).__name__}") from exc
