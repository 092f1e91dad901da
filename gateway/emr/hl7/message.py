"""A received HL7 v2 message, split by its own delimiters, read field by field as unescaped text.

A message is split into segments and fields when it arrives, and a field into
repetitions, components and subcomponents only when the mapping code reads it
(a handful of fields per message): python-hl7's parser builds the whole tree of
every field, which took a third of the gateway's time per message. Escape
sequences are decoded by python-hl7. :meth:`Hl7Message.field` always answers
repetitions of components of subcomponents, so the mapping code reads every
field the same way.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import hl7
import hl7.util

from gateway.emr.hl7.errors import ErrorCode, Hl7Error, location

Field = list[list[list[str]]]  # repetitions -> components -> subcomponents
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")



def mute_library_logging() -> None:
    """python-hl7 logs a field's whole value when an escape sequence is malformed: patient data."""
    for name in (hl7.util.__file__, hl7.util.__name__):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


@dataclass(frozen=True)
class Header:
    """MSH: who sent what."""

    message_type: str  # MSH-9.1, e.g. ADT
    trigger: str  # MSH-9.2, e.g. A01
    control_id: str  # MSH-10
    processing_id: str  # MSH-11
    version: str  # MSH-12
    sending_application: str  # MSH-3.1
    sending_facility: str  # MSH-4.1

    @property
    def kind(self) -> str:
        return f"{self.message_type}^{self.trigger}" if self.trigger else self.message_type or "?"


class Hl7Message:
    def __init__(self, segments: list[list[str]], separators: str, escape: str, *, subcomponents: bool = True) -> None:
        self._segments = segments  # each: [segment ID, field 1, field 2, ...] (MSH-1 is the field separator)
        self._repetition, self._component = separators[2], separators[3]
        self._subcomponent = separators[4] if subcomponents else None  # MSH-2 without one: no subcomponents
        self._escape = escape
        self._escapes = hl7.Message("\r", [], esc=escape, separators=separators) if escape else None
        self.segment_ids = [segment[0] for segment in segments]
        self._positions: dict[str, list[int]] = {}
        for i, sid in enumerate(self.segment_ids):
            self._positions.setdefault(sid, []).append(i)
        self._fields: dict[tuple[str, int, int], Field] = {}

    @classmethod
    def parse(cls, text: str) -> Hl7Message:
        """Split a message (segments ended by CR, LF or CRLF); raises Hl7Error (AR) when it is not HL7 v2."""
        text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r\n \t\x00")
        if not text.startswith("MSH") or len(text) < 8:
            raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "MSH^1", "the message does not begin with an MSH segment", reject=True)
        field_separator, encoding = text[3], text[4:9].split(text[3], 1)[0]
        delimiters = field_separator + encoding[:4]
        if len(encoding) < 3 or len(set(delimiters)) != len(delimiters) or any(c.isalnum() or c.isspace() for c in delimiters):
            raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, location("MSH", 2), "MSH-2 encoding characters are not valid", reject=True)
        separators = "\r" + field_separator + encoding[1] + encoding[0] + (encoding[3] if len(encoding) > 3 else "&")
        segments = []
        for number, line in enumerate((line for line in text.split("\r") if line.strip()), start=1):
            fields = line.split(field_separator)
            if not _SEGMENT_ID.fullmatch(fields[0]):
                raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "MSH^1", f"line {number} is not an HL7 segment", reject=True)
            if fields[0] == "MSH":
                fields.insert(1, field_separator)
            segments.append(fields)
        return cls(segments, separators, encoding[2] if len(encoding) > 2 else "", subcomponents=len(encoding) > 3)

    def count(self, segment: str) -> int:
        return self.segment_ids.count(segment)

    def field(self, segment: str, number: int, *, occurrence: int = 1) -> Field:
        """Field ``number`` of the segment's ``occurrence``-th instance; [] when absent or empty."""
        key = (segment, number, occurrence)
        if key not in self._fields:
            self._fields[key] = self._read(segment, number, occurrence)
        return self._fields[key]

    def _read(self, segment: str, number: int, occurrence: int) -> Field:
        positions = self._positions.get(segment, [])
        if occurrence > len(positions):
            return []
        fields = self._segments[positions[occurrence - 1]]
        if number >= len(fields) or not fields[number].strip():
            return []
        raw = fields[number]
        if segment == "MSH" and number <= 2:  # the delimiters themselves
            return [[[raw]]]
        return [
            [[self._unescape(sub) for sub in self._split_subcomponents(component)] for component in repetition.split(self._component)]
            for repetition in raw.split(self._repetition)
        ]

    def _split_subcomponents(self, component: str) -> list[str]:
        return component.split(self._subcomponent) if self._subcomponent else [component]

    def _unescape(self, value: str) -> str:
        if self._escapes is not None and self._escape in value:
            return str(self._escapes.unescape(value)).strip()
        return value.strip()

    def value(self, segment: str, number: int, component: int = 1, sub: int = 1, *, repetition: int = 1, occurrence: int = 1) -> str:
        """One value by its position (1-based, as in HL7), "" when absent."""
        field = self.field(segment, number, occurrence=occurrence)
        try:
            return field[repetition - 1][component - 1][sub - 1]
        except IndexError:
            return ""

    def header(self) -> Header:
        """MSH, checked for what every message needs; raises Hl7Error (AR)."""
        msh = "MSH"
        values = {
            "message_type": self.value(msh, 9, 1).upper(),
            "trigger": self.value(msh, 9, 2).upper(),
            "control_id": self.value(msh, 10),
            "processing_id": self.value(msh, 11).upper(),
            "version": self.value(msh, 12),
            "sending_application": self.value(msh, 3),
            "sending_facility": self.value(msh, 4),
        }
        header = Header(**values)
        if not header.control_id:
            raise Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, location(msh, 10), "MSH-10 message control ID missing", reject=True)
        if not header.message_type:
            raise Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, location(msh, 9), "MSH-9 message type missing", reject=True)
        return header
