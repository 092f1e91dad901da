"""HL7 v2 values as the DICOM values the index keeps: dates, times, person names, sex, codes and strings.

Each conversion checks what DICOM needs (length, characters, a real date)
and raises :class:`Hl7Error` naming the field, so that a bad value is
refused with a clear error rather than stored.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from gateway.emr.hl7.errors import ErrorCode, Hl7Error

NULL = '""'  # HL7's explicit null: clear the value (an empty field leaves it as it is)

_DTM = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?")
# HL7 table 0001 (administrative sex) -> DICOM Patient's Sex (M, F, O; empty when unknown).
_SEX = {"M": "M", "F": "F", "O": "O", "A": "O", "N": "O", "U": ""}
_CODE_STRING = re.compile(r"[A-Z0-9_ ]{1,16}")


def _bad(where: str, what: str) -> Hl7Error:
    return Hl7Error(ErrorCode.DATA_TYPE, where, what)


def date_time(value: str, where: str, what: str, zone: ZoneInfo | None = None) -> tuple[str, str]:
    """A DT or DTM value as a DICOM date (YYYYMMDD, "" when only the year or month is known) and time (HHMMSS or "").

    With ``zone``, a value carrying its UTC offset is given in that zone (DICOM dates and times carry none)."""
    match = _DTM.fullmatch(value)
    if match is None:
        raise _bad(where, f"{what} is not an HL7 date/time (YYYYMMDD[HHMM[SS]])")
    year, month, day, hour, minute, second = match.groups()[:6]
    offset = match.group(8)
    if day is None:
        return "", ""
    try:
        dt.date(int(year), int(month), int(day))
        if hour is not None:
            dt.time(int(hour), int(minute or 0), int(second or 0))
    except ValueError:
        raise _bad(where, f"{what} is not a valid date/time") from None
    if zone is not None and offset and hour is not None:
        sign = -1 if offset[0] == "-" else 1
        given = dt.timezone(sign * dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
        moment = dt.datetime(int(year), int(month), int(day), int(hour), int(minute or 0), int(second or 0), tzinfo=given)
        local = moment.astimezone(zone)
        return local.strftime("%Y%m%d"), local.strftime("%H%M%S")
    time = f"{hour}{minute or '00'}{second or '00'}" if hour is not None else ""
    return f"{year}{month}{day}", time


def _name_part(value: str) -> str:
    return " ".join(value.replace("^", " ").replace("=", " ").replace("\\", " ").split())


def person_name(family: str, given: str = "", middle: str = "", suffix: str = "", prefix: str = "", *, where: str) -> str:
    """DICOM PN (family^given^middle^prefix^suffix) from the parts of an XPN or XCN."""
    parts = [_name_part(p) for p in (family, given, middle, prefix, suffix)]
    name = "^".join(parts).rstrip("^")
    if len(name) > 64:
        raise _bad(where, "the name is longer than DICOM allows (64 characters)")
    return name


def sex(value: str, where: str) -> str:
    code = value.upper()
    if code not in _SEX:
        raise Hl7Error(ErrorCode.TABLE_VALUE_NOT_FOUND, where, "administrative sex is not one of F, M, O, U, A, N")
    return _SEX[code]


def identifier(value: str, where: str, what: str, max_length: int) -> str:
    """An ID kept as a DICOM SH or LO value: refused rather than cut when too long."""
    if len(value) > max_length:
        raise _bad(where, f"{what} is longer than DICOM allows ({max_length} characters)")
    if "\\" in value or any(ch < " " for ch in value):
        raise _bad(where, f"{what} holds a backslash or a control character")
    return value


def text(value: str, max_length: int) -> str:
    """Descriptive text (descriptions, code meanings): cut to the DICOM length; backslashes would split it."""
    return " ".join(value.replace("\\", "/").split())[:max_length]


def code_string(value: str, where: str, what: str) -> str:
    """A DICOM CS value (modality): upper case letters, digits, space and underscore, at most 16."""
    value = value.strip().upper()
    if value and not _CODE_STRING.fullmatch(value):
        raise _bad(where, f"{what} is not a DICOM code string (A-Z, 0-9, _, at most 16 characters)")
    return value


def ae_title(value: str, where: str) -> str:
    value = value.strip()
    if len(value) > 16 or "\\" in value or any(ch < " " for ch in value):
        raise _bad(where, "the AE title is not 1 to 16 printable characters")
    return value
