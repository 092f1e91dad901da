"""Shifting DA and DT values by a whole number of days (Retain Longitudinal Temporal Information, Modified Dates)."""

from __future__ import annotations

import datetime as dt


def shift_date(value: str, days: int) -> str | None:
    """A DA value (YYYYMMDD) moved by ``days``; None when it is not a valid date."""
    value = value.strip()
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        day = dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
        return (day + dt.timedelta(days=days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):
        return None


def shift_datetime(value: str, days: int) -> str | None:
    """A DT value with its date part moved; time, fraction and UTC offset are kept. A DT without day precision is not shifted."""
    value = value.strip()
    if len(value) < 8:
        return None
    shifted = shift_date(value[:8], days)
    return None if shifted is None else shifted + value[8:]
