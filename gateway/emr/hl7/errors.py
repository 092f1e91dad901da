"""Errors in a received HL7 v2 message, as the ACK's ERR segment reports them (HL7 table 0357)."""

from __future__ import annotations

from enum import IntEnum
from functools import lru_cache


class ErrorCode(IntEnum):
    SEGMENT_SEQUENCE = 100
    REQUIRED_FIELD_MISSING = 101
    DATA_TYPE = 102
    TABLE_VALUE_NOT_FOUND = 103
    UNSUPPORTED_MESSAGE_TYPE = 200
    UNSUPPORTED_EVENT = 201
    UNSUPPORTED_PROCESSING_ID = 202
    UNSUPPORTED_VERSION = 203
    UNKNOWN_KEY = 204
    DUPLICATE_KEY = 205
    INTERNAL_ERROR = 207

    @property
    def text(self) -> str:
        return _TEXT[self]


_TEXT = {
    ErrorCode.SEGMENT_SEQUENCE: "Segment sequence error",
    ErrorCode.REQUIRED_FIELD_MISSING: "Required field missing",
    ErrorCode.DATA_TYPE: "Data type error",
    ErrorCode.TABLE_VALUE_NOT_FOUND: "Table value not found",
    ErrorCode.UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    ErrorCode.UNSUPPORTED_EVENT: "Unsupported event code",
    ErrorCode.UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    ErrorCode.UNSUPPORTED_VERSION: "Unsupported version id",
    ErrorCode.UNKNOWN_KEY: "Unknown key identifier",
    ErrorCode.DUPLICATE_KEY: "Duplicate key identifier",
    ErrorCode.INTERNAL_ERROR: "Application internal error",
}


@lru_cache(maxsize=1024)
def location(segment: str, field: int | None = None, repetition: int | None = None, *, occurrence: int = 1) -> str:
    """An error location (ERL): ``PID^1^3``, ``PID^1^3^2`` for the second repetition of PID-3."""
    parts = [segment, str(occurrence)]
    if field is not None:
        parts.append(str(field))
        if repetition is not None:
            parts.append(str(repetition))
    return "^".join(parts)


class Hl7Error(Exception):
    """The message cannot be applied: answered AE (application error) or, with ``reject``, AR; nothing changes.

    ``text`` names what is wrong, never a value of the message (it goes into the ACK and the log)."""

    def __init__(self, code: ErrorCode, where: str, text: str, *, reject: bool = False) -> None:
        super().__init__(text)
        self.code = code
        self.where = where  # ERL, e.g. PID^1^3^2
        self.text = text
        self.reject = reject

    @property
    def ack_code(self) -> str:
        return "AR" if self.reject else "AE"
