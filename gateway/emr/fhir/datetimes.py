"""DICOM dates and times (local, without a zone) as FHIR ``dateTime`` values in the hospital's time zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo


def fhir_datetime(date: str, time: str, zone: ZoneInfo) -> str | None:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDThh:mm:ss+07:00`` from a DA and a TM value; None when the date is not valid."""
    date = date.strip()
    try:
        day = dt.date(int(date[:4]), int(date[4:6]), int(date[6:8])) if len(date) == 8 and date.isdigit() else None
    except ValueError:
        day = None
    if day is None:
        return None
    digits = time.strip().split(".")[0]
    if len(digits) < 2 or not digits.isdigit():
        return day.isoformat()
    hour, minute, second = int(digits[:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
    try:
        moment = dt.datetime(day.year, day.month, day.day, hour, minute, min(second, 59), tzinfo=zone)
    except ValueError:
        return day.isoformat()
    return moment.isoformat()
