"""The index side of QIDO-RS: which attributes are matching keys, whether a value can be matched, and a page of
matches with the total the page is taken from.

The SQL itself is the C-FIND matching of ``storage.index.hierarchy``, so that the two protocols answer alike;
this module keeps its SQL expressions and columns out of the HTTP adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from storage.index.database import IndexDatabaseError
from storage.index.hierarchy import ATTRIBUTES, HierarchyQuery, Kind, Level, condition, count, search


@dataclass(frozen=True)
class MatchingKey:
    """What a query parameter's attribute is: its level, and whether it takes a list of values (UIDs, statuses)."""

    keyword: str
    level: Level
    listed: bool


def matching_key(keyword: str) -> MatchingKey | None:
    """The attribute as a matching key; None when the index keeps no such attribute or only returns it."""
    attribute = ATTRIBUTES.get(keyword)
    if attribute is None or attribute.kind is Kind.RETURN_ONLY:
        return None
    return MatchingKey(keyword, attribute.level, attribute.kind in (Kind.UID, Kind.STATUS))


def check_value(keyword: str, value: str) -> None:
    """Refuse a value the attribute cannot be matched with (InvalidQuery, with the reason), before any search."""
    condition(ATTRIBUTES[keyword], value)


def keywords_at(level: Level) -> set[str]:
    """Every attribute the index keeps at the level and above (``includefield=all``)."""
    return {keyword for keyword, attribute in ATTRIBUTES.items() if attribute.level.depth <= level.depth}


@dataclass(frozen=True)
class Page:
    """One page of matches (``limit``/``offset`` of the query) and how many there are in all."""

    rows: list[dict[str, Any]]
    total: int


class QidoQueries:
    """Pages of matches at one level of the information model, for QIDO-RS."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def page(self, query: HierarchyQuery) -> Page:
        """The page and the total, read on one connection; raises IndexDatabaseError."""
        try:
            with self.engine.connect() as conn:
                rows = list(search(conn, query))
                return Page(rows, count(conn, query))
        except SQLAlchemyError as exc:
            raise IndexDatabaseError(f"query failed: {type(exc).__name__}") from exc
