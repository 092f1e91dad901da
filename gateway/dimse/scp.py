"""The DICOM SCP: C-ECHO and C-STORE for every storage SOP class, acknowledging only durable instances.

Associations run on the gateway's event loop (``gateway.dimse.association``);
a C-STORE's dataset is offered to the ingest service
(``gateway.ingest.service``), which validates and spools it in threads of its own.
"""

from __future__ import annotations

import asyncio
import logging
import socket

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
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.presentation import PresentationContext, build_context

from gateway.audit import AuditWriter
from gateway.dimse import pdu
from gateway.dimse.admission import Admission
from gateway.dimse.association import Association
from gateway.dimse.find import FIND_MODELS, FindService
from gateway.dimse.retrieve import GET_MODELS, MOVE_MODELS, RetrieveService
from gateway.dimse.mpps import MODALITY_PERFORMED_PROCEDURE_STEP, MppsService
from gateway.dimse.worklist import MODALITY_WORKLIST_FIND, WorklistService
from gateway.peers import PeerAllowList
from gateway.ingest.service import IngestService
from gateway.metrics import GatewayMetrics
from gateway.settings import DicomSettings

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
    for cx in AllStoragePresentationContexts:
        assert cx.abstract_syntax is not None
        storage = build_context(cx.abstract_syntax, ACCEPTED_TRANSFER_SYNTAXES)
        # A C-GET requester proposes to act as storage SCP for what it retrieves; accept either role.
        storage.scu_role = storage.scp_role = True
        contexts.append(storage)
    return contexts


class DicomServer:
    """The DICOM listener: admits peers and runs their associations; stores go to the ingest service."""

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
        self.supported_contexts = supported_contexts(worklist=worklist is not None)
        self.admission = Admission(settings, metrics)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._refusing = 0  # connections from addresses not allowed, being answered

    @property
    def active(self) -> int:
        """Associations open now (connections still waiting for their request not included)."""
        return self.admission.associations

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("DICOM server not started")
        return int(self._server.sockets[0].getsockname()[1])

    reuse_port = False  # True: several processes share the port (the supervisor's workers)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept,
            self.settings.host,
            self.settings.port,
            limit=max(self.settings.max_pdu_size, 1 << 20) + 64,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
        )
        log.info("DICOM SCP %s listening on port %d", self.settings.ae_title, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # DIMSE is request/response: without NODELAY each small response
            # waits for Nagle and delayed ACKs (up to 40 ms).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = str((writer.get_extra_info("peername") or ("?", 0))[0])
        if not self.peers.allows(peer):  # before admission: it neither waits nor takes a place of one that may
            self.admission.not_allowed(peer)
            await self._refuse_peer(reader, writer)
            return
        connection = self.admission.open(peer, writer.transport.abort)
        if connection is None:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await Association(self, reader, writer, connection).run()
        finally:
            self.admission.close(connection)
            self._tasks.discard(task)

    async def _refuse_peer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer a peer outside ``dicom.allowed_peers`` with A-ASSOCIATE-RJ (permanent), so that its operator sees
        a refusal rather than a network fault; only a few at once and only for a moment, so a flood holds nothing."""
        if self._refusing >= _MOST_REFUSING:
            writer.transport.abort()
            return
        self._refusing += 1
        try:
            # A modality sends its request as it connects; a loaded machine may take a moment to.
            async with asyncio.timeout(min(_REFUSE_WITHIN_SECONDS, self.settings.association_request_timeout / 2)):
                await pdu.read_pdu(reader, 1 << 16, expect=pdu.A_ASSOCIATE_RQ)
                writer.write(pdu.associate_rj(0x01, 0x01, 0x01))  # rejected-permanent, by the service user
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, pdu.PDUError):
            pass
        finally:
            self._refusing -= 1
            writer.transport.abort() if writer.transport.get_write_buffer_size() else writer.close()
