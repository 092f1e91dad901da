"""A received HL7 v2 message, parsed by python-hl7, read field by field as unescaped text.

python-hl7 nests a field as deep as its delimiters go (a plain value is a
string, ``a^b`` a list of components); :meth:`Hl7Message.field` always
answers repetitions of components of subcomponents, so the mapping code
reads every field the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import hl7
import hl7.util
from hl7.containers import Repetition

from gateway.emr.hl7.errors import ErrorCode, Hl7Error, location

Field = list[list[list[str]]]  # repetitions -> components -> subcomponents



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
    def __init__(self, parsed: hl7.Message) -> None:
        self._message = parsed
        self.segment_ids = [str(segment[0]).strip() for segment in parsed]
        self._positions: dict[str, list[int]] = {}
        for i, sid in enumerate(self.segment_ids):
            self._positions.setdefault(sid, []).append(i)
        self._fields: dict[tuple[str, int, int], Field] = {}

    @classmethod
    def parse(cls, text: str) -> Hl7Message:
        """Parse a message (segments ended by CR, LF or CRLF); raises Hl7Error (AR) when it is not HL7 v2."""
        text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r\n \t\x00")
        if not text.startswith("MSH") or len(text) < 8:
            raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "MSH^1", "the message does not begin with an MSH segment", reject=True)
        try:
            parsed = hl7.parse(text)
        except Exception:  # python-hl7 raises assorted errors on malformed text
            raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "MSH^1", "the message cannot be parsed as HL7 v2", reject=True) from None
        return cls(parsed)

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
        seg = self._message[positions[occurrence - 1]]
        if number >= len(seg):
            return []
        out: Field = []
        for repetition in seg[number]:
            if isinstance(repetition, Repetition):
                components = [[item] if isinstance(item, str) else [str(s) for s in item] for item in repetition]
            else:
                components = [[str(repetition)]]
            out.append([[self._unescape(s) for s in subs] for subs in components])
        return [] if out == [[[""]]] else out

    def _unescape(self, value: str) -> str:
        return str(self._message.unescape(value)).strip() if "\\" in value else value.strip()

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
