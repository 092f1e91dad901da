"""Sending one HL7 v2 message over MLLP (python-hl7's asyncio client) and waiting for its ACK.

A message counts as delivered only on an AA (or CA) acknowledgement of that
very message. Every failure raises :class:`Hl7DeliveryError` with a reason
free of patient data (the peer's free-text error message is not copied).
"""

from __future__ import annotations

import asyncio

from hl7.mllp import InvalidBlockError, open_hl7_connection

from gateway.emr.hl7.message import Hl7Message
from gateway.emr.hl7.errors import Hl7Error

ENCODING = "utf-8"
ACCEPTED = frozenset({"AA", "CA"})


class Hl7DeliveryError(Exception):
    """The message was not accepted: refused (AE, AR), no ACK in time, or no connection (``unavailable``)."""

    def __init__(self, reason: str, *, unavailable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unavailable = unavailable


def _control_id(message: str) -> str:
    try:
        return Hl7Message.parse(message).header().control_id
    except Hl7Error:
        raise ValueError("the message to send has no readable MSH segment with a control ID") from None


def _judge(ack: str, control_id: str) -> None:
    try:
        msg = Hl7Message.parse(ack)
    except Hl7Error:
        raise Hl7DeliveryError("the answer is not an HL7 message") from None
    code = msg.value("MSA", 1).upper()
    if msg.value("MSA", 2) != control_id:
        raise Hl7DeliveryError(f"the answer ({code or 'no MSA'}) acknowledges another message")
    if code not in ACCEPTED:
        error = msg.value("ERR", 3) or msg.value("ERR", 1, 4)
        where = msg.value("ERR", 2) and "^".join(filter(None, (msg.value("ERR", 2, c) for c in range(1, 6))))
        detail = "".join([f" (error {error[:8]})" if error else "", f" at {where[:24]}" if where else ""])
        raise Hl7DeliveryError(f"refused with {code or 'no MSA'}{detail}")


async def send_message(host: str, port: int, message: str, timeout: float) -> str:
    """Send ``message`` (segments ended by CR) and return the ACK's text; raises Hl7DeliveryError."""
    control_id = _control_id(message)
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await open_hl7_connection(host, port, encoding=ENCODING)
            writer.writeblock(message.encode(ENCODING))
            await writer.drain()
            ack = (await reader.readblock()).decode(ENCODING, errors="replace")
    except TimeoutError:
        raise Hl7DeliveryError(f"no ACK from {host}:{port} within {timeout:g} s", unavailable=True) from None
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise Hl7DeliveryError(f"connection to {host}:{port} failed ({type(exc).__name__})", unavailable=True) from None
    except (InvalidBlockError, ValueError):
        raise Hl7DeliveryError(f"{host}:{port} answered with something that is not an MLLP block") from None
    finally:
        if writer is not None:
            writer.close()
    _judge(ack, control_id)
    return ack
