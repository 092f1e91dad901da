"""Reading what the collector received: RFC 5424 headers, sequence numbers, and schema validation of the XML."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from lxml import etree

SCHEMA = Path(__file__).resolve().parent / "data" / "ps3.15-A.5.1-audit-message.rng"
_LINE = re.compile(
    r'<85>1 (?P<time>\S+) (?P<host>\S+) pacs-gateway (?P<process>\S+) IHE\+RFC-3881 \[meta sequenceId="(?P<seq>\d+)"\] '
    r"(?P<xml><AuditMessage>.*</AuditMessage>)$"
)


@cache
def schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(SCHEMA)))


def validate(xml: bytes | str) -> etree._Element:
    """The message's root, or AssertionError with the schema's complaint."""
    root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    rng = schema()
    assert rng.validate(root), f"{rng.error_log}\n{xml!r}"
    return root


@dataclass(frozen=True)
class Received:
    process: str
    sequence: int
    root: etree._Element

    @property
    def event_id(self) -> str:
        return str(self.root.find("EventIdentification/EventID").get("csd-code"))

    @property
    def user(self) -> str:
        return str(self.root.find("ActiveParticipant").get("UserID"))


def parse(line: str) -> Received:
    match = _LINE.match(line)
    assert match, f"not an RFC 5424 audit message as sent: {line[:200]!r}"
    return Received(match["process"], int(match["seq"]), validate(match["xml"]))
