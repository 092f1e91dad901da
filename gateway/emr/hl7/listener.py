"""The MLLP listener (python-hl7's asyncio server): every message received is answered with its ACK.

Each connection is served in order. A sender that waits for each ACK gets
each message applied and committed on its own. A sender that runs ahead
(several messages in flight) gets the messages already received applied
together: in order, each in its own savepoint, under one durable commit, then
their ACKs in order. No ACK leaves before its message is committed. Logs
name the message type, control ID and ACK code, never a value.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from dataclasses import dataclass

from hl7.mllp import HL7StreamReader, HL7StreamWriter, InvalidBlockError, start_hl7_server
from hl7.mllp.streams import CARRIAGE_RETURN, END_BLOCK, START_BLOCK

from gateway.audit import AuditWriter
from gateway.dimse.scp import PeerAllowList
from gateway.emr.hl7.handler import Handled, Hl7Handler
from gateway.metrics import GatewayMetrics
from gateway.settings import Hl7Settings

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1 << 20
MAX_BATCH = 64  # messages a sender that does not wait for each ACK gets applied (and committed) together
_COUNTED_KINDS = frozenset({"ADT^A01", "ADT^A04", "ADT^A08", "ADT^A40", "ORM^O01", "OMI^O23"})


@dataclass(frozen=True)
class _Received:
    arrived: float  # perf_counter
    text: str | None = None
    unreadable: str = ""  # why the block is not a message, when text is None


async def _next_batch(inbox: asyncio.Queue[_Received | None]) -> list[_Received]:
    """The next message (waiting for it) and those already queued behind it; empty at the end of the connection."""
    first = await inbox.get()
    if first is None:
        return []
    batch = [first]
    while len(batch) < MAX_BATCH and not inbox.empty():
        more = inbox.get_nowait()
        if more is None:
            inbox.put_nowait(None)  # the end, seen again once this batch is answered
            break
        batch.append(more)
    return batch


class Hl7Listener:
    def __init__(self, settings: Hl7Settings, handler: Hl7Handler, metrics: GatewayMetrics, audit: AuditWriter) -> None:
        self.settings = settings
        self.handler = handler
        self.metrics = metrics
        self.audit = audit
        self.peers = PeerAllowList(settings.allowed_peers)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("HL7 listener not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await start_hl7_server(
            self._serve,
            self.settings.host,
            self.settings.port,
            encoding=self.settings.encoding,
            limit=MAX_MESSAGE_BYTES,
            reuse_address=True,
        )
        log.info("HL7 MLLP listener on port %d", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, reader: HL7StreamReader, writer: HL7StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:  # request/response: without it each ACK waits for Nagle and delayed ACKs
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = str((writer.get_extra_info("peername") or ("?",))[0])
        if not self.peers.allows(peer):
            log.warning("HL7 connection from %s refused: address not allowed", peer)
            self._connections.discard(task)
            writer.close()
            return
        log.info("HL7 connection from %s", peer)
        inbox: asyncio.Queue[_Received | None] = asyncio.Queue(MAX_BATCH * 4)
        reading = asyncio.create_task(self._read(reader, inbox))
        answered: Counter[str] = Counter()
        try:
            while batch := await _next_batch(inbox):
                answers = await self._answer(batch)
                encoding = self.settings.encoding
                # One write for the batch's ACKs, each in its MLLP block.
                writer.write(b"".join(START_BLOCK + a.ack.encode(encoding, errors="replace") + END_BLOCK + CARRIAGE_RETURN for a in answers))
                await writer.drain()
                acknowledged = time.perf_counter()
                for received, answer in zip(batch, answers):
                    self._account(answer, peer, acknowledged - received.arrived)
                    answered[answer.ack_code] += 1
        except ConnectionError:
            pass  # the peer went away; a message it got no ACK for was either applied whole or not at all
        finally:
            reading.cancel()
            self._connections.discard(task)
            writer.close()
            log.info("HL7 connection from %s closed: %s", peer, ", ".join(f"{n} {code}" for code, n in sorted(answered.items())) or "no message")

    async def _read(self, reader: HL7StreamReader, inbox: asyncio.Queue[_Received | None]) -> None:
        """Every block the peer sends, in order, then the end (None); the bounded inbox holds back a sender that runs ahead."""
        try:
            while (received := await self._receive(reader)) is not None:
                await inbox.put(received)
        except OSError:
            pass  # the peer went away
        except Exception as exc:  # never leave the connection waiting for an end that does not come
            log.error("HL7 connection read failed: %s", type(exc).__name__)
        await inbox.put(None)

    async def _receive(self, reader: HL7StreamReader) -> _Received | None:
        try:
            block = await reader.readblock()
        except asyncio.IncompleteReadError as end:
            if end.partial.strip():
                log.warning("HL7 connection closed in the middle of a message")
            return None
        except InvalidBlockError:
            return _Received(time.perf_counter(), unreadable="data outside an MLLP block")
        except ValueError:
            return _Received(time.perf_counter(), unreadable=f"message larger than {MAX_MESSAGE_BYTES} bytes")
        arrived = time.perf_counter()
        try:
            return _Received(arrived, text=block.decode(self.settings.encoding))
        except UnicodeDecodeError:
            return _Received(arrived, unreadable=f"message is not in {self.settings.encoding}")

    async def _answer(self, batch: list[_Received]) -> list[Handled]:
        """The answers to a batch, in order: its messages are applied in one transaction, in a worker thread."""
        texts = [received.text for received in batch if received.text is not None]
        applied = iter(await asyncio.to_thread(self.handler.handle_batch, texts) if texts else [])
        return [next(applied) if received.text is not None else self.handler.unreadable(received.unreadable) for received in batch]

    def _account(self, handled: Handled, peer: str, seconds: float) -> None:
        # Each accepted message at DEBUG only: at hundreds a second, INFO lines cost a fifth of the listener's time.
        log.log(logging.DEBUG if handled.ack_code == "AA" else logging.WARNING, "HL7 %s %s from %s: %s%s",
                handled.kind, handled.control_id, peer, handled.ack_code, f" ({handled.error_code})" if handled.error_code else "")  # fmt: skip
        kind = handled.kind if handled.kind in _COUNTED_KINDS else "other"
        self.metrics.hl7_messages.labels(kind, handled.ack_code).inc()
        self.metrics.hl7_ack_seconds.observe(seconds)
        for merge in handled.merges:
            surviving = self.audit.values([("PatientID", merge.surviving_id), ("IssuerOfPatientID", merge.surviving_issuer)])
            merged = self.audit.values([("PatientID", merge.merged_id), ("IssuerOfPatientID", merge.merged_issuer)])
            target = f"{handled.kind} {handled.control_id} surviving {surviving} merged {merged} studies={merge.studies}"
            self._audit("patient-merge", target, peer)

    def _audit(self, action: str, target: str, source: str) -> None:
        self.audit.record(
            username="hl7", role="hl7", action=action, target=target[:512], source=source, outcome=0
        )
