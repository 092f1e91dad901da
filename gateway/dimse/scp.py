"""The DICOM SCP: C-ECHO and C-STORE for every storage SOP class, acknowledging only durable instances.

Associations run on the gateway's event loop (``gateway.dimse.association``);
a C-STORE's dataset is offered to the ingest service
(``gateway.ingest.service``), which validates and spools it in threads of its own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl

from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    MPEGTransferSyntaxes,
    RLETransferSyntaxes,
    UID,
    UncompressedTransferSyntaxes,
)
from pynetdicom.presentation import PresentationContext, build_context

from gateway.audit import AuditWriter
from gateway.dimse import pdu
from gateway.dimse.admission import Admission
from gateway.dimse.association import Association
from gateway.dimse.find import FIND_MODELS, FindService
from gateway.dimse.retrieve import GET_MODELS, MOVE_MODELS, RetrieveService
from gateway.dimse.tls_accept import AeBinding, HandshakeFailed, start_tls
from gateway.dimse.mpps import MODALITY_PERFORMED_PROCEDURE_STEP, MppsService
from gateway.dimse.worklist import MODALITY_WORKLIST_FIND, WorklistService
from gateway.peers import PeerAllowList
from gateway.proxy_protocol import connection_client, trusted_proxies
from gateway.ingest.service import IngestService
from gateway.metrics import GatewayMetrics
from gateway.settings import DicomSettings
from gateway.storage_classes import storage_classes

log = logging.getLogger(__name__)

# Peers outside dicom.allowed_peers are answered A-ASSOCIATE-RJ, this many at once and within this long (at most
# half the association request timeout); others, and those whose request is not there by then, are closed.
_MOST_REFUSING = 8
_REFUSE_WITHIN_SECONDS = 1.0

VERIFICATION = "1.2.840.10008.1.1"

# Accepted exactly as the sender proposes them: the gateway never transcodes on receipt.
ACCEPTED_TRANSFER_SYNTAXES: list[str | UID] = [
    *UncompressedTransferSyntaxes,
    *JPEGTransferSyntaxes,
    *JPEGLSTransferSyntaxes,
    *JPEG2000TransferSyntaxes,
    *RLETransferSyntaxes,
    *MPEGTransferSyntaxes,
]


def supported_contexts(*, worklist: bool = False) -> list[PresentationContext]:
    contexts = [build_context(VERIFICATION)]
    workflow = (MODALITY_WORKLIST_FIND, MODALITY_PERFORMED_PROCEDURE_STEP) if worklist else ()
    query_models = (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS, *workflow)
    contexts += [build_context(model, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]) for model in query_models]
    for sop_class in storage_classes():
        storage = build_context(sop_class, ACCEPTED_TRANSFER_SYNTAXES)
        # A C-GET requester proposes to act as storage SCP for what it retrieves; accept either role.
        storage.scu_role = storage.scp_role = True
        contexts.append(storage)
    return contexts


class DicomServer:
    """The DICOM listeners: admits peers and runs their associations; stores go to the ingest service.

    The plain port (``dicom.port``) and the DICOM TLS port (``dicom_tls.port``, with ``tls_context``) share
    everything but the handshake: the allow lists, the PROXY protocol, admission and its limits. On the TLS port,
    ``ae_binding`` (when set) says which calling AE titles each client certificate may use.
    """

    def __init__(
        self,
        settings: DicomSettings,
        ingest: IngestService,
        metrics: GatewayMetrics,
        find: FindService,
        retrieve: RetrieveService,
        audit: AuditWriter,
        worklist: WorklistService | None = None,
        mpps: MppsService | None = None,
        *,
        trusted: tuple[str, ...] | list[str] = (),
        plain: bool = True,
        tls_port: int = 0,
        tls_context: ssl.SSLContext | None = None,
        ae_binding: AeBinding | None = None,
    ) -> None:
        self.settings = settings
        self.ingest = ingest  # C-STORE datasets are offered to it
        self.metrics = metrics
        self.find = find
        self.retrieve = retrieve
        self.audit = audit  # queries and retrieves are recorded in the audit trail
        self.worklist = worklist  # Modality Worklist C-FIND, when served
        self.mpps = mpps  # Modality Performed Procedure Step N-CREATE and N-SET, with the worklist
        self.peers = PeerAllowList(settings.allowed_peers, when_empty="anyone")
        self.trusted = trusted_proxies(trusted)  # network.trusted_proxies: they send a PROXY header first
        self.supported_contexts = supported_contexts(worklist=worklist is not None)
        self.admission = Admission(settings, metrics)
        self.plain = plain  # listen on settings.port (else only on the TLS port)
        self.tls_port_wanted, self.tls_context = tls_port, tls_context
        self.ae_binding = ae_binding or AeBinding({})
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._refusing = 0  # connections from addresses not allowed, being answered

    @property
    def active(self) -> int:
        """Associations open now (connections still waiting for their request not included)."""
        return self.admission.associations

    @property
    def port(self) -> int:
        """The plain port; the TLS port when there is no plain listener."""
        server = self._server or self._tls_server
        if server is None:
            raise RuntimeError("DICOM server not started")
        return int(server.sockets[0].getsockname()[1])

    @property
    def tls_port(self) -> int | None:
        return int(self._tls_server.sockets[0].getsockname()[1]) if self._tls_server is not None else None

    reuse_port = False  # True: several processes share the port (the supervisor's workers)

    async def start(self) -> None:
        if self.plain:
            self._server = await self._listen(self.settings.port, None)
            log.info("DICOM SCP %s listening on port %d", self.settings.ae_title, self.port)
        if self.tls_context is not None:
            self._tls_server = await self._listen(self.tls_port_wanted, self.tls_context)
            log.info("DICOM TLS SCP %s listening on port %d", self.settings.ae_title, self.tls_port)

    async def _listen(self, port: int, context: ssl.SSLContext | None) -> asyncio.Server:
        # No ssl= here: a trusted proxy's PROXY header comes before the handshake, which _accept starts.
        return await asyncio.start_server(
            functools.partial(self._accept, tls=context),
            self.settings.host,
            port,
            limit=max(self.settings.max_pdu_size, 1 << 20) + 64,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
        )

    async def stop(self) -> None:
        for server in (self._server, self._tls_server):
            if server is not None:
                server.close()
                await server.wait_closed()
        self._server = self._tls_server = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: ssl.SSLContext | None = None
    ) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # DIMSE is request/response: without NODELAY each small response
            # waits for Nagle and delayed ACKs (up to 40 ms).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = await connection_client(reader, str((writer.get_extra_info("peername") or ("?", 0))[0]), self.trusted,
                                       protocol="dicom", refused=self.metrics.proxy_headers_refused)  # fmt: skip
        if peer is None:  # from a trusted proxy, without a valid PROXY header
            writer.transport.abort()
            return
        if not self.peers.allows(peer):  # before admission: it neither waits nor takes a place of one that may
            self.admission.not_allowed(peer)
            await self._refuse_peer(reader, writer, tls)
            return
        raw = writer.transport
        connection = self.admission.open(peer, raw.abort)  # the socket's transport: it aborts TLS too
        if connection is None:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if tls is not None:
                # The handshake is part of waiting for the request: bounded by the same timeout, in the same queue.
                try:
                    connection.certificate = await start_tls(
                        reader, writer, tls, self.settings.association_request_timeout
                    )
                except HandshakeFailed as failed:
                    self.admission.handshake_failed(connection, str(failed))
                    raw.abort()
                    return
                connection.tls = True
            await Association(self, reader, writer, connection).run()
        finally:
            self.admission.close(connection)
            self._tasks.discard(task)

    async def _refuse_peer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: ssl.SSLContext | None
    ) -> None:
        """Answer a peer outside ``dicom.allowed_peers`` with A-ASSOCIATE-RJ (permanent), so that its operator sees
        a refusal rather than a network fault; only a few at once and only for a moment, so a flood holds nothing."""
        if self._refusing >= _MOST_REFUSING:
            writer.transport.abort()
            return
        self._refusing += 1
        try:
            # A modality sends its request as it connects; a loaded machine may take a moment to.
            within = min(_REFUSE_WITHIN_SECONDS, self.settings.association_request_timeout / 2)
            if tls is not None:
                await start_tls(reader, writer, tls, within)
            async with asyncio.timeout(within):
                await pdu.read_pdu(reader, 1 << 16, expect=pdu.A_ASSOCIATE_RQ)
                writer.write(pdu.associate_rj(0x01, 0x01, 0x01))  # rejected-permanent, by the service user
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, pdu.PDUError, HandshakeFailed):
            pass
        finally:
            self._refusing -= 1
            writer.transport.abort() if writer.transport.get_write_buffer_size() else writer.close()
