"""Matching values shared by the query protocols: dates, date ranges, and the error a bad one raises."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

class InvalidQuery(ValueError):
    """A matching key's value cannot be used. Its text may quote the value (for the caller's answer);
    :attr:`loggable` names only the key."""

    @property
    def loggable(self) -> str:
        return f"invalid {str(self).split(':', 1)[0].split(' ', 1)[0]}"

def parse_date(value: str, what: str) -> str:
    try:
        dt.datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise InvalidQuery(f"{what}: {value!r} is not a date YYYYMMDD") from None
    return value

@dataclass(frozen=True)
class DateRange:
    """Inclusive bounds; an empty bound is open."""

    start: str = ""
    end: str = ""

    @classmethod
    def parse(cls, value: str, what: str = "StudyDate") -> DateRange:
        value = value.strip()
        if "-" not in value:
            day = parse_date(value, what)
            return cls(day, day)
        start, _, end = value.partition("-")
        if not start and not end:
            raise InvalidQuery(f"{what}: a range needs at least one bound")
        start = parse_date(start, what) if start else ""
        end = parse_date(end, what) if end else ""
        if start and end and start > end:
            raise InvalidQuery(f"{what}: range starts after it ends")
        return cls(start, end)
