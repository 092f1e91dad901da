"""The index side of QIDO-RS's query parameters: which attributes are matching keys, at which level, and whether a
value can be matched at all, so that a bad request is refused with its reason before any search.

Searching is ``storage.index.study_query``'s (the C-FIND matching of ``storage.index.hierarchy``, so that the two
protocols answer alike); this module keeps the attribute table's SQL columns and expressions out of the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from storage.index.hierarchy import ATTRIBUTES, Kind, Level, condition


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
    """Refuse a value the attribute cannot be matched with (InvalidQuery, with the reason), before any search.

    Unlike ``StudyQueries.check`` it checks a lone ``*`` too, as QIDO-RS always has (``StudyInstanceUID=*`` is refused)."""
    condition(ATTRIBUTES[keyword], value)


def keywords_at(level: Level) -> set[str]:
    """Every attribute the index keeps at the level and above (``includefield=all``)."""
    return {keyword for keyword, attribute in ATTRIBUTES.items() if attribute.level.depth <= level.depth}
