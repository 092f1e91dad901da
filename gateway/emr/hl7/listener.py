"""The MLLP listener (python-hl7's asyncio server): every message received is answered with its ACK.

Each connection is served in order. A sender that waits for each ACK gets
each message applied and committed on its own. A sender that runs ahead
(several messages in flight) gets the messages already received, and those
arriving while they are applied, applied together in order under one durable
commit (see Hl7Handler.handle_stream), then their ACKs in order, in one
write. No ACK leaves before its message is committed. Logs name the message
type, control ID and ACK code, never a value.

In a cluster one process of the site listens: the one holding the site lease
``hl7-listener`` (gateway.cluster). On losing it the listener stops accepting
(:meth:`Hl7Listener.stop_accepting`): messages already received are applied
and acknowledged, then each connection is closed; what a sender sent after
that gets no ACK, and the sender sends it again to the next holder.

With ``hl7.tls_cert_file`` the port speaks MLLP over TLS only (gateway.emr.hl7.tls_accept
accepts, reads a trusted proxy's PROXY header, then shakes hands); the
connection is then served here as any other.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections import Counter, deque
from dataclasses import dataclass

from hl7.mllp import HL7StreamReader, HL7StreamWriter, InvalidBlockError, start_hl7_server
from hl7.mllp.streams import CARRIAGE_RETURN, END_BLOCK, START_BLOCK

from gateway.audit import AuditWriter
from gateway.emr.hl7 import adt
from gateway.emr.hl7.handler import Handled, Hl7Handler
from gateway.emr.hl7.tls_accept import TlsMllpServer
from gateway.metrics import GatewayMetrics
from gateway.peers import PeerAllowList
from gateway.proxy_protocol import connection_client, trusted_proxies
from gateway.settings import Hl7Settings
from gateway.tls import peer_names

log = logging.getLogger(__name__)

SITE_LEASE = "hl7-listener"  # the site lease of the one process that listens (gateway.cluster)
DRAIN_SECONDS = 10.0  # on losing the site lease, how long connections may take to answer what they received
MAX_MESSAGE_BYTES = 1 << 20
MAX_BATCH = 64  # messages a sender that does not wait for each ACK gets applied (and committed) together
_PATIENT_KINDS = tuple(f"ADT^{event}" for event in sorted(adt.DEMOGRAPHIC_EVENTS))
_AUDITED = {**dict.fromkeys(_PATIENT_KINDS, "patient-record"), "ORM^O01": "order-record", "OMI^O23": "order-record"}  # A40: per merge
_COUNTED_KINDS = frozenset({*_PATIENT_KINDS, "ADT^A40", "ORM^O01", "OMI^O23"})


@dataclass(frozen=True)
class _Received:
    arrived: float  # perf_counter
    text: str | None = None
    unreadable: str = ""  # why the block is not a message, when text is None


class _Inbox:
    """Blocks received on one connection, in order, waiting for their answer."""

    def __init__(self) -> None:
        self.pending: deque[_Received] = deque()
        self.room = asyncio.Semaphore(MAX_BATCH * 4)  # received and not yet answered, at most
        self._arrived = asyncio.Event()
        self._closed = False

    def put(self, received: _Received) -> None:
        self.pending.append(received)
        self._arrived.set()

    def close(self) -> None:
        self._closed = True
        self._arrived.set()

    async def wait(self) -> bool:
        """Whether something waits for an answer (waiting for it); False at the end of the connection."""
        while not self.pending:
            if self._closed:
                return False
            self._arrived.clear()
            await self._arrived.wait()
        return True


class Hl7Listener:
    def __init__(
        self, settings: Hl7Settings, handler: Hl7Handler, metrics: GatewayMetrics, audit: AuditWriter,
        *, trusted: tuple[str, ...] | list[str] = (),
    ) -> None:  # fmt: skip
        self.settings = settings
        self.handler = handler
        self.metrics = metrics
        self.audit = audit
        # ADT rewrites patients' records: an empty list does not mean "anyone", a remote EMR must be named.
        self.peers = PeerAllowList(settings.allowed_peers, when_empty="loopback")
        self.trusted = trusted_proxies(trusted)  # network.trusted_proxies: they send a PROXY header first
        self.tls = settings.listener_tls()  # None: plain MLLP; wrong files stop the start here
        self._server: asyncio.Server | TlsMllpServer | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._readers: dict[asyncio.Task[None], tuple[_Inbox, asyncio.Task[None]]] = {}  # connection -> its inbox, reader

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("HL7 listener not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        if self.tls is not None:
            self._server = TlsMllpServer.listen(
                self.settings.host, self.settings.port, self.tls.context, self._serve, admits=self.admits, trusted=self.trusted,
                limit=MAX_MESSAGE_BYTES, encoding=self.settings.encoding, refused=self.metrics.proxy_headers_refused,
                handshake_failed=self.metrics.hl7_tls_failed,
            )  # fmt: skip
        else:
            self._server = await start_hl7_server(
                self._serve,
                self.settings.host,
                self.settings.port,
                encoding=self.settings.encoding,
                limit=MAX_MESSAGE_BYTES,
                reuse_address=True,
            )
        # Listening beyond this host yet hearing only it is safe, and likely not what was meant: say so louder.
        local_only = not self.peers.networks and self.settings.host not in ("127.0.0.1", "::1", "localhost")
        log.log(logging.WARNING if local_only else logging.INFO, "HL7 MLLP%s listener on port %d, accepting %s",
                self._tls_label(), self.port, self.peers.describe() + (" (hl7.allowed_peers is empty)" if not self.peers.networks else ""))  # fmt: skip

    async def stop_accepting(self) -> None:
        """Take no more connections or messages; answer what was received, then close each connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
            log.info("HL7 MLLP listener stopped accepting (another process of the site listens now)")
        for inbox, reading in list(self._readers.values()):
            reading.cancel()  # a message half read gets no ACK: its sender sends it again
            inbox.close()
        if self._connections:
            # A peer that does not read its ACKs is not waited for long: its connection is cut (no ACK, no loss).
            _, stuck = await asyncio.wait(list(self._connections), timeout=DRAIN_SECONDS)
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.gather(*stuck, return_exceptions=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    def _tls_label(self) -> str:
        if self.tls is None:
            return ""
        if self.tls.context.verify_mode == ssl.CERT_REQUIRED:
            return " over TLS (client certificate required)"
        return " over TLS" + (" (client certificate optional)" if self.tls.client_ca_file else "")

    def admits(self, peer: str) -> bool:
        """Whether ``peer`` may send (hl7.allowed_peers); a refusal is logged and counted."""
        if self.peers.allows(peer):
            return True
        log.warning("HL7 connection from %s refused: address not allowed (hl7.allowed_peers)", peer)
        self.metrics.hl7_refused.inc()
        return False

    async def _serve(
        self, reader: HL7StreamReader, writer: HL7StreamWriter, client: str | None = None,
        tls: ssl.SSLObject | None = None,
    ) -> None:  # fmt: skip
        """One connection; ``client`` (over TLS): known and admitted already, from the socket or its PROXY header."""
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:  # request/response: without it each ACK waits for Nagle and delayed ACKs
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = client if client is not None else await connection_client(
            reader, str((writer.get_extra_info("peername") or ("?",))[0]), self.trusted,
            protocol="hl7", refused=self.metrics.proxy_headers_refused,
        )  # fmt: skip
        if peer is None:  # from a trusted proxy, without a valid PROXY header
            self._connections.discard(task)
            writer.close()
            return
        if client is None and not self.admits(peer):  # over TLS, admitted before the handshake
            self._connections.discard(task)
            writer.close()
            return
        if tls is not None:  # a certificate's names are systems' names, not patients'
            names = peer_names(tls)
            log.info("HL7 connection from %s over %s%s", peer, tls.version(), f", certificate {names[0]}" if names else "")
        else:
            log.info("HL7 connection from %s", peer)
        inbox = _Inbox()
        reading = asyncio.create_task(self._read(reader, inbox))
        self._readers[task] = (inbox, reading)
        answered: Counter[str] = Counter()
        try:
            while await inbox.wait():
                answers = await self._answer(inbox)
                encoding = self.settings.encoding
                # One write for the batch's ACKs, each in its MLLP block.
                writer.write(b"".join(START_BLOCK + a.ack.encode(encoding, errors="replace") + END_BLOCK + CARRIAGE_RETURN for _, a in answers))
                await writer.drain()
                for _ in answers:
                    inbox.room.release()
                acknowledged = time.perf_counter()
                for received, answer in answers:
                    self._account(answer, peer, acknowledged - received.arrived)
                    answered[answer.ack_code] += 1
        except ConnectionError:
            pass  # the peer went away; a message it got no ACK for was either applied whole or not at all
        except Exception as exc:  # only its type: its message may quote a value
            log.error("HL7 connection from %s failed (%s); closing it", peer, type(exc).__name__)
        finally:
            reading.cancel()
            self._readers.pop(task, None)
            self._connections.discard(task)
            writer.close()
            log.info("HL7 connection from %s closed: %s", peer, ", ".join(f"{n} {code}" for code, n in sorted(answered.items())) or "no message")

    async def _read(self, reader: HL7StreamReader, inbox: _Inbox) -> None:
        """Every block the peer sends, in order, then the end; a sender running far ahead waits for room."""
        try:
            while True:
                await inbox.room.acquire()
                received = await self._receive(reader)
                if received is None:
                    break
                inbox.put(received)
        except OSError:
            pass  # the peer went away
        except Exception as exc:  # never leave the connection waiting for an end that does not come
            log.error("HL7 connection read failed: %s", type(exc).__name__)
        inbox.close()

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

    async def _answer(self, inbox: _Inbox) -> list[tuple[_Received, Handled]]:
        """The next answers, in order: a block that is no message alone, else the messages received in a row,
        applied in one transaction in a worker thread, which also takes those arriving meanwhile."""
        if inbox.pending[0].text is None:
            received = inbox.pending.popleft()
            return [(received, self.handler.unreadable(received.unreadable))]
        taken: list[_Received] = []

        def more() -> list[str]:  # in the worker thread; the event loop only appends to the deque
            texts: list[str] = []
            while inbox.pending and (text := inbox.pending[0].text) is not None and len(taken) < MAX_BATCH:
                taken.append(inbox.pending.popleft())
                texts.append(text)
            return texts

        answers = await asyncio.to_thread(self.handler.handle_stream, more)
        return list(zip(taken, answers))

    def _account(self, handled: Handled, peer: str, seconds: float) -> None:
        # Each accepted message at DEBUG only: at hundreds a second, INFO lines cost a fifth of the listener's time.
        log.log(logging.DEBUG if handled.ack_code == "AA" else logging.WARNING, "HL7 %s %s from %s: %s%s",
                handled.kind, handled.control_id, peer, handled.ack_code, f" ({handled.error_code})" if handled.error_code else "")  # fmt: skip
        kind = handled.kind if handled.kind in _COUNTED_KINDS else "other"
        self.metrics.hl7_messages.labels(kind, handled.ack_code).inc()
        self.metrics.hl7_ack_seconds.observe(seconds)
        action = _AUDITED.get(handled.kind) if handled.ack_code == "AA" else None
        if action is not None:  # the EMR changed a patient's record or the worklist: by which message, for whom
            who = self.audit.values([("PatientID", handled.patient[0]), ("IssuerOfPatientID", handled.patient[1])]) if handled.patient else ""
            self._audit(action, f"{handled.kind} {handled.control_id} {who}".rstrip(), peer)
        for merge in handled.merges:
            surviving = self.audit.values([("PatientID", merge.surviving_id), ("IssuerOfPatientID", merge.surviving_issuer)])
            merged = self.audit.values([("PatientID", merge.merged_id), ("IssuerOfPatientID", merge.merged_issuer)])
            target = f"{handled.kind} {handled.control_id} surviving {surviving} merged {merged} studies={merge.studies}"
            self._audit("patient-merge", target, peer)

    def _audit(self, action: str, target: str, source: str) -> None:
        self.audit.record(
            username="hl7", role="hl7", action=action, target=target[:512], source=source, outcome=0
        )
