"""RFC 5424 syslog messages carrying audit messages, framed for RFC 5425 (TLS, octet counting).

Facility 10 (security/authorization, ``authpriv``) at severity 5 (notice), MSGID ``IHE+RFC-3881`` as IHE ITI
TF-2 (ITI-20) asks, and the registered ``meta`` structured data element (RFC 5424 7.3) with ``sequenceId``: the
message's number in its process's spool, which goes on across restarts. The host name, ``PROCID`` (the
gateway's process: ``gateway``, ``worker-0``, ``hl7``...) and ``sequenceId`` together name a message, so a
repository (or an auditor) can tell a message sent twice from two messages.
"""

from __future__ import annotations

import datetime as dt
import re

PRI = 10 * 8 + 5
APP_NAME = "pacs-gateway"
MSGID = "IHE+RFC-3881"
_PRINTABLE = re.compile(r"[^\x21-\x7e]")
SEQUENCE_WRAP = 2_147_483_647  # RFC 5424 7.3.1: sequenceId runs 1..2147483647, then starts at 1 again


def header_field(text: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, ``-`` when empty."""
    return _PRINTABLE.sub("_", text)[:limit] or "-"


def timestamp(when: dt.datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sequence_id(number: int) -> int:
    return (number - 1) % SEQUENCE_WRAP + 1


def syslog_message(payload: bytes, *, when: dt.datetime, host: str, process: str, number: int) -> bytes:
    """An RFC 5424 message: header, ``[meta sequenceId=..]``, then the payload (an XML audit message)."""
    header = (
        f"<{PRI}>1 {timestamp(when)} {header_field(host, 255)} {APP_NAME} {header_field(process, 128)} {MSGID} "
        f'[meta sequenceId="{sequence_id(number)}"] '
    )
    return header.encode("ascii") + payload


def frame(message: bytes) -> bytes:
    """RFC 5425 4.3: MSG-LEN SP SYSLOG-MSG."""
    return str(len(message)).encode("ascii") + b" " + message
