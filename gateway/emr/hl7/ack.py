"""The original-mode acknowledgement (ACK) of a received message: MSH, MSA and, on error, ERR.

Built as text rather than through python-hl7's ``create_ack``: an
unparsable message must be answered too, and the ERR segment is ours.
"""

from __future__ import annotations

import datetime as dt
import itertools
import secrets

from gateway.emr.hl7.errors import ErrorCode, Hl7Error
from gateway.emr.hl7.escaping import escape
from gateway.emr.hl7.message import Header

DEFAULT_VERSION = "2.5"
# ACK control IDs: unique per process start (random prefix), then counted; at most 20 characters (ST in MSH-10).
_ACK_PREFIX = secrets.token_hex(4).upper()
_ack_numbers = itertools.count(1)


def hl7_timestamp(moment: dt.datetime | None = None) -> str:
    m = (moment or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    return f"{m.year:04d}{m.month:02d}{m.day:02d}{m.hour:02d}{m.minute:02d}{m.second:02d}+0000"


def build_ack(
    code: str,
    *,
    header: Header | None,
    application: str,
    facility: str,
    text: str = "",
    error: Hl7Error | None = None,
) -> str:
    """An ACK (AA, AE or AR) to the message ``header`` describes (None: it could not be read)."""
    h = header
    msh = [
        "MSH", "^~\\&", escape(application), escape(facility),
        escape(h.sending_application) if h else "", escape(h.sending_facility) if h else "",
        hl7_timestamp(), "", f"ACK^{escape(h.trigger)}^ACK" if h and h.trigger else "ACK",
        f"{_ACK_PREFIX}{next(_ack_numbers)}", escape(h.processing_id) if h and h.processing_id else "P",
        escape(h.version) if h and h.version else DEFAULT_VERSION,
    ]  # fmt: skip
    segments = ["|".join(msh), "|".join(["MSA", code, escape(h.control_id) if h else "", escape(text)])]
    if error is not None:
        segments.append(_err(error))
    return "\r".join(segments) + "\r"


def _err(error: Hl7Error) -> str:
    code = ErrorCode(error.code)
    cwe = f"{int(code)}^{code.text}^HL70357"
    parts = error.where.split("^")
    # ERR-1 (HL7 2.3 and 2.4 readers): segment^sequence^field^code&text&table.
    eld = "^".join([*(parts + ["", ""])[:3], cwe.replace("^", "&")])
    return "|".join(["ERR", eld, error.where, cwe, "E", "", "", "", escape(error.text)])
