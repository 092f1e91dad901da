"""Sends one process's audit spool, in order, to the audit record repository over syslog on TLS (RFC 5425).

Syslog over TLS has no acknowledgement: a message the kernel took may still be
lost when the collector goes away. So a batch counts as delivered, and the
spool moves past it, only when

1. the collector's TCP acknowledged every byte of it (the socket's send queue,
   ``TIOCOUTQ``, is empty), and then
2. for ``confirm_seconds`` the connection stayed open, or was closed by the
   collector cleanly (TLS close or FIN, no reset).

A collector closing with bytes it has not read resets the connection (that is
what TCP does), and a collector gone before it acknowledged never empties the
queue: in both cases the batch is sent again on the next connection. Before
each batch the sender also looks whether the collector closed the connection
meanwhile, and sends nothing on one it did. What it cannot see is a collector
that read a batch into its memory and was killed before writing it out; and a
batch sent again after a reset may repeat messages the collector had read.
The README says what was measured against rsyslog.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import ssl
import struct
import termios
import time
from contextlib import suppress

from gateway.atna.spool import AuditSpool
from gateway.atna.syslog import frame

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
ACK_TIMEOUT = 15.0
_TCP_CLOSE = 7  # linux/tcp_states.h


class PeerGone(ConnectionError):
    """The collector closed or reset the connection."""


def unacknowledged(watch: socket.socket) -> int | None:
    """Bytes the peer's TCP has not acknowledged yet (Linux ``TIOCOUTQ``); None where that cannot be asked."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(watch.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0])
    except OSError:
        return None


def reset(watch: socket.socket) -> bool:
    """The connection was reset (Linux: TCP_INFO's state is CLOSE). A reset empties the send queue, so an
    empty queue alone does not say the peer took everything."""
    try:
        return watch.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == _TCP_CLOSE
    except (OSError, AttributeError):
        return False


class AuditSender:
    """Delivers the spool's messages to one collector, in spool order; run as one task per process."""

    def __init__(
        self,
        spool: AuditSpool,
        host: str,
        port: int,
        context: ssl.SSLContext,
        *,
        leftovers: list[AuditSpool] | None = None,
        batch_messages: int = 500,
        confirm_seconds: float = 0.2,
        retry_max_seconds: float = 10.0,
    ) -> None:
        self.spool = spool
        self.leftovers = list(leftovers or ())  # spools of processes gone (fewer workers now): sent first
        self.host, self.port = host, port
        self.context = context
        self.batch_messages = batch_messages
        self.confirm_seconds = confirm_seconds
        self.retry_max_seconds = retry_max_seconds
        self.wake = asyncio.Event()
        self.connected = False
        self.sent_batches = 0
        self.resent_batches = 0  # batches sent again after a connection failed before they were confirmed

    @property
    def pending(self) -> int:
        return self.spool.pending + sum(spool.pending for spool in self.leftovers)

    def _current(self) -> AuditSpool:
        """The spool to send from: a left-over one until it is empty (each keeps its own order), then our own."""
        return next((spool for spool in self.leftovers if spool.pending), self.spool)

    def notify(self) -> None:
        """New messages are in the spool (called on the event loop)."""
        self.wake.set()

    async def run(self) -> None:
        delay = 0.5
        outage: float | None = None
        while True:
            if self.pending == 0:
                self.wake.clear()
                if self.pending == 0:
                    await self.wake.wait()
                continue
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port, ssl=self.context, server_hostname=self.host),
                    CONNECT_TIMEOUT,
                )
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                if outage is None:
                    outage = time.monotonic()
                    log.warning("audit repository %s:%d unreachable (%s); %d audit message(s) wait in the spool",
                                self.host, self.port, type(exc).__name__, self.pending)  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)
                continue
            delay = 0.5
            if outage is not None:
                log.info("audit repository %s:%d reachable again after %.0f s; sending %d audit message(s)",
                         self.host, self.port, time.monotonic() - outage, self.pending)  # fmt: skip
                outage = None
            # A descriptor of our own on the socket: asyncio closes its one as soon as the collector closes or
            # resets, and what the collector acknowledged until then is still to be asked.
            sock = writer.get_extra_info("socket")
            watch = socket.socket(fileno=os.dup(sock.fileno())) if sock is not None else None
            delivered = self.sent_batches
            try:
                await self._deliver(reader, writer, watch)
            except (OSError, ssl.SSLError, TimeoutError) as exc:  # PeerGone is an OSError
                outage = time.monotonic()
                log.warning("audit repository %s:%d connection lost (%s); %d audit message(s) wait in the spool",
                            self.host, self.port, type(exc).__name__, self.pending)  # fmt: skip
                if self.sent_batches == delivered:  # a collector that takes connections and drops them: not in a loop
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_max_seconds)
            except Exception:  # a sender that dies would leave the spool to grow unseen: log, wait, go on
                outage = time.monotonic()
                log.exception("audit sender failed; %d audit message(s) wait in the spool", self.pending)
                await asyncio.sleep(delay)
            finally:
                self.connected = False
                writer.transport.abort()
                if watch is not None:
                    watch.close()

    async def _deliver(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, watch: socket.socket | None) -> None:
        """Send while connected; returns or raises once the connection is no use."""
        self.connected = True
        peer = asyncio.ensure_future(reader.read(1))  # the collector never sends: done means closed or reset
        try:
            # Under TLS 1.3 our handshake ends before the collector has judged our certificate: one that refuses it
            # closes the connection a moment later, after reading (and dropping) whatever came. So nothing is sent
            # before the connection has stood for a while.
            await asyncio.wait({peer}, timeout=self.confirm_seconds)
            if peer.done():
                raise PeerGone("closed by the audit repository right after the handshake (our certificate refused?)")
            while True:
                if peer.done():
                    raise PeerGone("closed by the audit repository")
                spool = self._current()
                batch = await asyncio.to_thread(spool.read, self.batch_messages)
                if not batch:
                    self.wake.clear()
                    # Nothing to read, though perhaps counted already (an append under way): wait for news.
                    waiting = asyncio.ensure_future(self.wake.wait())
                    await asyncio.wait({waiting, peer}, timeout=None if self.pending == 0 else 1.0,
                                       return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                    waiting.cancel()
                    continue
                writer.write(b"".join(frame(message) for _number, message in batch))
                await writer.drain()
                log.debug("audit messages %d-%d written", batch[0][0], batch[-1][0])
                if not await self._confirm(watch, peer):
                    self.resent_batches += 1
                    raise PeerGone("a batch not confirmed: sent again on the next connection")
                await asyncio.to_thread(spool.delivered, batch[-1][0])
                log.debug("audit messages %d-%d delivered", batch[0][0], batch[-1][0])
                self.sent_batches += 1
                if peer.done():
                    raise PeerGone("closed by the audit repository")
        finally:
            peer.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await peer

    async def _confirm(self, watch: socket.socket | None, peer: asyncio.Future[bytes]) -> bool:
        """Whether the batch just written reached the collector (see the module's docstring)."""
        deadline = time.monotonic() + ACK_TIMEOUT
        while watch is not None:
            waiting = unacknowledged(watch)
            if waiting is None:  # cannot be asked here: the connection staying up must do
                break
            if waiting == 0 or peer.done():
                if peer.done():
                    await asyncio.sleep(0.05)  # what is on its way still comes in: acknowledgements, or a reset
                if reset(watch) or unacknowledged(watch) != 0:
                    return False  # not all taken: sent again on the next connection
                break
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        done, _ = await asyncio.wait({peer}, timeout=self.confirm_seconds)
        if not done:
            return watch is None or not reset(watch)
        await asyncio.sleep(0.05)
        return closed_cleanly(peer) and (watch is None or not reset(watch))


def closed_cleanly(peer: asyncio.Future[bytes]) -> bool:
    """The collector closed the connection without a reset: it had read everything its TCP acknowledged."""
    if peer.cancelled():
        return False
    error = peer.exception()
    if error is None:
        return peer.result() == b""
    log.debug("audit repository connection ended by %r", error)
    return isinstance(error, ssl.SSLEOFError)  # a FIN without TLS's close: still no unread bytes
