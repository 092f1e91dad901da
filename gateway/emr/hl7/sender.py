"""Sending one HL7 v2 message over MLLP (python-hl7's asyncio client) and waiting for its ACK.

A message counts as delivered only on an AA (or CA) acknowledgement of that
very message. Every failure raises :class:`Hl7DeliveryError` with a reason
free of patient data (the peer's free-text error message is not copied).
Over TLS (MLLP over TLS) the EMR's certificate is checked and its host name
matched; a handshake that fails is a failed delivery like a refused
connection, with the TLS library's reason (``certificate verify failed: ...``).
"""

from __future__ import annotations

import asyncio
import ssl

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


def _tls_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    return str(exc.reason or type(exc).__name__)


async def send_message(
    host: str, port: int, message: str, timeout: float, *, tls: ssl.SSLContext | None = None, server_name: str = ""
) -> str:
    """Send ``message`` (segments ended by CR) and return the ACK's text; raises Hl7DeliveryError.

    ``tls``: over TLS, the certificate checked for ``server_name`` (default ``host``)."""
    control_id = _control_id(message)
    writer = None
    try:
        async with asyncio.timeout(timeout):
            secure = {"ssl": tls, "server_hostname": server_name or host} if tls is not None else {}
            reader, writer = await open_hl7_connection(host, port, encoding=ENCODING, **secure)
            writer.writeblock(message.encode(ENCODING))
            await writer.drain()
            ack = (await reader.readblock()).decode(ENCODING, errors="replace")
    except TimeoutError:
        raise Hl7DeliveryError(f"no ACK from {host}:{port} within {timeout:g} s", unavailable=True) from None
    except ssl.SSLError as exc:
        raise Hl7DeliveryError(f"TLS with {host}:{port} failed ({_tls_reason(exc)})", unavailable=True) from None
    except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
        partial = getattr(exc, "partial", b"")
        if tls is not None and writer is not None and not partial:
            # TLS 1.3: a client certificate refused shows only as the peer closing once the handshake is over.
            raise Hl7DeliveryError(
                f"TLS with {host}:{port}: closed by the peer after the handshake, without an answer "
                "(does it want a client certificate, or refuse ours? hl7.outbound_tls_cert_file)", unavailable=True,
            ) from None
        raise Hl7DeliveryError(f"connection to {host}:{port} failed ({type(exc).__name__})", unavailable=True) from None
    except OSError as exc:
        raise Hl7DeliveryError(f"connection to {host}:{port} failed ({type(exc).__name__})", unavailable=True) from None
    except (InvalidBlockError, ValueError):
        raise Hl7DeliveryError(f"{host}:{port} answered with something that is not an MLLP block") from None
    finally:
        if writer is not None:
            writer.close()
    _judge(ack, control_id)
    return ack
