"""The MLLP listener (python-hl7's asyncio server): every message received is answered with its ACK.

Each connection is served in order: a message is applied (in a worker
thread, one transaction) and acknowledged before the next is read. Logs
name the message type, control ID and ACK code, never a value.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from hl7.mllp import HL7StreamReader, HL7StreamWriter, InvalidBlockError, start_hl7_server

from gateway.audit import AuditWriter
from gateway.dimse.scp import PeerAllowList
from gateway.emr.hl7.handler import Handled, Hl7Handler
from gateway.metrics import GatewayMetrics
from gateway.settings import Hl7Settings

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1 << 20
_COUNTED_KINDS = frozenset({"ADT^A01", "ADT^A04", "ADT^A08", "ADT^A40", "ORM^O01", "OMI^O23"})


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
        try:
            while True:
                received = await self._next(reader)
                if received is None:
                    return
                handled, started = received
                writer.writeblock(handled.ack.encode(self.settings.encoding, errors="replace"))
                await writer.drain()
                self._account(handled, peer, time.perf_counter() - started)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the peer went away; a message it got no ACK for was either applied whole or not at all
        finally:
            self._connections.discard(task)
            writer.close()

    async def _next(self, reader: HL7StreamReader) -> tuple[Handled, float] | None:
        """The next message, handled, and when it had arrived; None at the end of the connection."""
        try:
            block = await reader.readblock()
        except asyncio.IncompleteReadError as end:
            if end.partial.strip():
                log.warning("HL7 connection closed in the middle of a message")
            return None
        except InvalidBlockError:
            return self.handler.unreadable("data outside an MLLP block"), time.perf_counter()
        except ValueError:
            return self.handler.unreadable(f"message larger than {MAX_MESSAGE_BYTES} bytes"), time.perf_counter()
        started = time.perf_counter()
        try:
            text = block.decode(self.settings.encoding)
        except UnicodeDecodeError:
            return self.handler.unreadable(f"message is not in {self.settings.encoding}"), started
        return await asyncio.to_thread(self.handler.handle, text), started

    def _account(self, handled: Handled, peer: str, seconds: float) -> None:
        log.info("HL7 %s %s from %s: %s%s", handled.kind, handled.control_id, peer, handled.ack_code,
                 f" ({handled.error_code})" if handled.error_code else "")  # fmt: skip
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
