"""The DICOM SCP: C-ECHO and C-STORE for every storage SOP class, acknowledging only durable instances."""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    MPEGTransferSyntaxes,
    RLETransferSyntaxes,
    UncompressedTransferSyntaxes,
)
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from gateway.dimse.status import StoreStatus
from gateway.ingest.instance import InstanceRejected, ReceivedInstance, parse_instance
from gateway.ingest.spool import SpoolFull, SpoolLog
from gateway.metrics import GatewayMetrics
from gateway.settings import DicomSettings

log = logging.getLogger(__name__)

# Accepted exactly as the sender proposes them: the gateway never transcodes on receipt.
ACCEPTED_TRANSFER_SYNTAXES = [
    *UncompressedTransferSyntaxes,
    *JPEGTransferSyntaxes,
    *JPEGLSTransferSyntaxes,
    *JPEG2000TransferSyntaxes,
    *RLETransferSyntaxes,
    *MPEGTransferSyntaxes,
]


def quiet_pynetdicom() -> None:
    """Keep identifiers (patient names, IDs) out of the logs: pynetdicom logs datasets by default."""
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def _failure(status: StoreStatus, reason: str, offending_tag: int | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = int(status)
    ds.ErrorComment = reason[:64]
    if offending_tag is not None:
        ds.OffendingElement = [offending_tag]
    return ds


class PeerAllowList:
    """Peer addresses allowed to associate; an empty list allows everyone."""

    def __init__(self, entries: list[str]) -> None:
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in entries]

    def allows(self, address: str) -> bool:
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


class StorageSCP:
    def __init__(
        self,
        settings: DicomSettings,
        spool: SpoolLog,
        metrics: GatewayMetrics,
        validate: Callable[..., ReceivedInstance] = parse_instance,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.metrics = metrics
        self.validate = validate
        self.peers = PeerAllowList(settings.allowed_peers)
        self._server: ThreadedAssociationServer | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("SCP not started")
        return int(self._server.server_address[1])

    def _build_ae(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.maximum_associations = s.max_associations
        ae.maximum_pdu_size = s.max_pdu_size
        ae.network_timeout = s.network_timeout
        ae.dimse_timeout = s.dimse_timeout
        ae.acse_timeout = min(30.0, s.network_timeout)
        if s.allowed_calling_aets:
            ae.require_calling_aet = list(s.allowed_calling_aets)
        ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ACCEPTED_TRANSFER_SYNTAXES)
        return ae

    def start(self) -> None:
        quiet_pynetdicom()
        handlers = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_CONN_OPEN, self._on_connection),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_RELEASED, self._on_closed),
            (evt.EVT_ABORTED, self._on_closed),
        ]
        self._server = self._build_ae().start_server(
            (self.settings.host, self.settings.port), block=False, evt_handlers=handlers
        )
        log.info("DICOM SCP %s listening on port %d", self.settings.ae_title, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -------------------------------------------------------------- handlers

    def _on_connection(self, event: Any) -> None:
        # DIMSE exchanges are small request/response messages: without NODELAY,
        # Nagle's algorithm and delayed ACKs stall each response by up to 40 ms.
        sock = event.assoc.dul.socket.socket
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_requested(self, event: Any) -> None:
        address = event.assoc.requestor.address
        if not self.peers.allows(address):
            log.warning("association from %s refused: address not allowed", address)
            # As pynetdicom's own ACSE does for a refused calling AE title: reject,
            # then stop the DUL, which lets the A-ASSOCIATE-RJ reach the peer first.
            event.assoc.acse.send_reject(0x01, 0x01, 0x01)
            evt.trigger(event.assoc, evt.EVT_REJECTED, {})
            event.assoc.kill()

    def _on_established(self, event: Any) -> None:
        self.metrics.associations.inc()

    def _on_closed(self, event: Any) -> None:
        self.metrics.associations.dec()

    def _on_echo(self, event: Any) -> int:
        return 0x0000

    def _on_store(self, event: Any) -> Dataset | int:
        started = time.perf_counter()
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        peer = event.assoc.requestor.address
        request = event.request
        try:
            data = event.encoded_dataset(include_meta=True)
            instance = self.validate(
                data,
                source_ae=calling_ae,
                affected_sop_class=str(request.AffectedSOPClassUID),
                affected_sop_instance=str(request.AffectedSOPInstanceUID),
            )
        except InstanceRejected as rejected:
            log.warning("C-STORE from %s (%s) refused: %s", calling_ae, peer, rejected.reason)
            self.metrics.rejected.labels(rejected.reason).inc()
            return _failure(rejected.status, rejected.reason, rejected.offending_tag)
        except Exception as exc:  # never let a failure look like Success
            log.exception("C-STORE from %s (%s) failed while decoding", calling_ae, peer)
            self.metrics.rejected.labels("decoding failure").inc()
            return _failure(StoreStatus.CANNOT_UNDERSTAND, f"cannot decode dataset ({type(exc).__name__})")
        meta = {
            "record": instance.record.to_dict(),
            "calling_ae": calling_ae,
            "peer": peer,
            "received_at": time.time(),
        }
        try:
            self.spool.append(meta, instance.data)
        except SpoolFull as full:
            log.warning("C-STORE from %s (%s) refused: %s", calling_ae, peer, full)
            self.metrics.rejected.labels("spool full").inc()
            return _failure(StoreStatus.OUT_OF_RESOURCES, f"gateway spool full: {full}"[:64])
        except OSError as exc:
            log.error("C-STORE from %s (%s) refused: spool write failed: %s", calling_ae, peer, exc.strerror)
            self.metrics.rejected.labels("spool write failed").inc()
            return _failure(StoreStatus.OUT_OF_RESOURCES, "gateway could not write the instance durably")
        self.metrics.received.labels("dimse").inc()
        self.metrics.ack_latency.observe(time.perf_counter() - started)
        return 0x0000
