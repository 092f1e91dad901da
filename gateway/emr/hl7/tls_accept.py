"""The MLLP over TLS port: its own accept loop, so that a PROXY header can be read before the TLS handshake.

Why not ``start_hl7_server(..., ssl=...)`` or ``StreamWriter.start_tls``: a
trusted balancer (HAProxy ``send-proxy-v2``) sends its PROXY header and then
the client's ClientHello, often in one TCP segment. A stream transport reads
whatever the socket holds, so the start of the handshake would land in the
StreamReader's buffer behind the header, where ``start_tls`` never looks; the
handshake then fails or hangs. Here each accepted socket is read byte-exactly
(the header's own lengths, nothing further) straight from the kernel, and only
then handed to asyncio with the TLS context (``connect_accepted_socket``), so
the handshake sees every byte the client sent.

A handshake that fails (no client certificate when one is required, an unknown
CA, a plain MLLP sender, a port scanner) closes that connection only; it is
logged with the peer's address and the TLS library's reason, never a byte of
what was sent, and counted in ``pacsgw_hl7_tls_handshakes_failed``. A peer that
connects and closes (a port probe, a balancer's check) is only noted at DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, cast

from hl7.mllp.streams import HL7StreamProtocol, HL7StreamReader

from gateway.peers import PeerAllowList
from gateway.proxy_protocol import connection_client

log = logging.getLogger(__name__)

HANDSHAKE_SECONDS = 10.0  # a TLS handshake that takes longer is a stalled or hostile peer
Serve = Callable[[HL7StreamReader, Any, str, ssl.SSLObject | None], Coroutine[Any, Any, None]]


class _SocketReader:
    """``readexactly`` on a raw socket: exactly the bytes asked for leave the kernel, none more."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.loop, self.sock = loop, sock

    async def readexactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = await self.loop.sock_recv(self.sock, n - len(data))
            if not chunk:
                raise asyncio.IncompleteReadError(data, n)
            data += chunk
        return data


class TlsMllpServer:
    """A listening socket for MLLP over TLS with an ``asyncio.Server``-like face (``sockets``, ``close``)."""

    def __init__(
        self, sock: socket.socket, context: ssl.SSLContext, serve: Serve, *, admits: Callable[[str], bool],
        trusted: PeerAllowList, limit: int, encoding: str, refused: object, handshake_failed: Any,
    ) -> None:  # fmt: skip
        self.sockets = [sock]
        self.context = context
        self.serve = serve
        self.admits = admits  # hl7.allowed_peers, checked before the handshake: a stranger costs no TLS work
        self.trusted = trusted
        self.limit = limit
        self.encoding = encoding
        self.refused = refused  # pacsgw_proxy_headers_refused
        self.handshake_failed = handshake_failed
        self._accepting = asyncio.create_task(self._accept(sock), name="hl7-tls-accept")
        self._opening: set[asyncio.Task[None]] = set()

    @classmethod
    def listen(cls, host: str, port: int, context: ssl.SSLContext, serve: Serve, **kwargs: Any) -> TlsMllpServer:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=128)
        sock.setblocking(False)
        return cls(sock, context, serve, **kwargs)

    def close(self) -> None:
        """No more connections; handshakes under way are cut. Connections already served go on (their tasks)."""
        self._accepting.cancel()
        for task in list(self._opening):
            task.cancel()
        for sock in self.sockets:
            sock.close()

    async def wait_closed(self) -> None:
        await asyncio.gather(self._accepting, *self._opening, return_exceptions=True)

    async def _accept(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listening)
            except OSError as exc:  # e.g. out of file descriptors: keep listening
                log.warning("HL7 TLS accept failed (%s)", type(exc).__name__)
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._open(sock, str(address[0])))
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    async def _open(self, sock: socket.socket, address: str) -> None:
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        try:
            # A PROXY header (from a trusted proxy only) first, in clear, byte-exact; then the TLS handshake.
            reader = cast(asyncio.StreamReader, _SocketReader(loop, sock))  # read_header needs readexactly only
            peer = await connection_client(reader, address, self.trusted, protocol="hl7", refused=self.refused)
            if peer is None or not self.admits(peer):
                sock.close()
                return
            protocol = self._protocol(peer)
            await loop.connect_accepted_socket(
                lambda: protocol, sock, ssl=self.context, ssl_handshake_timeout=HANDSHAKE_SECONDS
            )
        except asyncio.CancelledError:
            sock.close()
            raise
        except ConnectionAbortedError:  # asyncio's handshake timeout: a stalled or hostile peer
            sock.close()
            self.handshake_failed.inc()
            log.warning("HL7 TLS handshake with %s failed (none within %g s); connection closed", address, HANDSHAKE_SECONDS)
        except (ConnectionError, asyncio.IncompleteReadError):  # a port probe or health check: connected, closed
            sock.close()
            log.debug("HL7 TLS connection from %s closed before its handshake ended", address)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            sock.close()
            reason = getattr(exc, "reason", None) or type(exc).__name__
            self.handshake_failed.inc()
            log.warning("HL7 TLS handshake with %s failed (%s); connection closed", address, reason)

    def _protocol(self, peer: str) -> HL7StreamProtocol:
        loop = asyncio.get_running_loop()
        reader = HL7StreamReader(limit=self.limit, loop=loop, encoding=self.encoding)

        def connected(stream: HL7StreamReader, writer: Any) -> Coroutine[Any, Any, None]:
            return self.serve(stream, writer, peer, writer.get_extra_info("ssl_object"))

        return HL7StreamProtocol(reader, connected, loop=loop, encoding=self.encoding)
