"""An HL7 v2 sender over MLLP for the tests: python-hl7's asyncio client, one connection, ACK by ACK or running ahead,
in clear or over TLS (``tls``: a client context; the listener's certificate is checked for ``localhost``)."""

from __future__ import annotations

import asyncio
import ssl

import hl7
from hl7.mllp import open_hl7_connection


def _secure(tls: ssl.SSLContext | None) -> dict:
    return {"ssl": tls, "server_hostname": "localhost"} if tls is not None else {}


async def _exchange(port: int, messages: list[str | bytes], raw: bool, tls: ssl.SSLContext | None = None) -> list[hl7.Message]:
    reader, writer = await open_hl7_connection("127.0.0.1", port, encoding="utf-8", **_secure(tls))
    acks = []
    try:
        for text in messages:
            data = text if isinstance(text, bytes) else text.encode("utf-8")
            if raw:
                writer.write(data)
            else:
                writer.writeblock(data)
            await writer.drain()
            acks.append(await asyncio.wait_for(reader.readmessage(), 10))
    finally:
        writer.close()
    return acks


async def _run_ahead(port: int, messages: list[str | bytes]) -> list[hl7.Message]:
    reader, writer = await open_hl7_connection("127.0.0.1", port, encoding="utf-8")
    try:
        for text in messages:
            writer.writeblock(text if isinstance(text, bytes) else text.encode("utf-8"))
        await writer.drain()
        return [await asyncio.wait_for(reader.readmessage(), 10) for _ in messages]
    finally:
        writer.close()


def send_without_waiting(port: int, *messages: str | bytes) -> list[hl7.Message]:
    """Write every message on one connection before reading any ACK (a sender that runs ahead); the ACKs, parsed."""
    return asyncio.run(_run_ahead(port, list(messages)))


def send(port: int, *messages: str | bytes, raw: bool = False, tls: ssl.SSLContext | None = None) -> list[hl7.Message]:
    """Send each message on one connection, waiting for its ACK; the ACKs, parsed.

    ``raw``: written as given, without MLLP framing (for malformed framing)."""
    return asyncio.run(_exchange(port, list(messages), raw, tls))


def ack_code(ack: hl7.Message) -> str:
    return str(ack.segment("MSA")(1))


def err(ack: hl7.Message) -> tuple[str, str]:
    """ERR-2 (location) and ERR-3.1 (HL7 error code) of an ACK."""
    segment = ack.segment("ERR")
    return str(segment(2)), str(segment(3)(1)(1))
