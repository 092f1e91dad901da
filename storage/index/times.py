"""Timestamps of the index: always timezone-aware UTC, whichever database returned them."""

from __future__ import annotations

import datetime as dt
from typing import overload


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@overload
def as_utc(value: dt.datetime) -> dt.datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.timezone.utc)  # SQLite returns naive datetimes
