"""C-MOVE and C-GET SCP: Patient Root and Study Root retrieve (PS3.4 C.4.2, C.4.3).

The identifier names what to retrieve by unique keys; every matching
instance is read from the object store and sent as a C-STORE sub-operation,
to a configured destination AE (C-MOVE, on a new association) or back on the
requesting association (C-GET). Pending responses carry the counts of
remaining, completed, failed and warning sub-operations; the final one
says Success, Warning (B000: some failed, with their UIDs) or Cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from gateway.dimse.errors import (
    DestinationUnreachable,
    DimseFailure,
    IdentifierMismatch,
    IndexUnavailable,
    NotAuthorized,
    OutOfResources,
    Undecodable,
    UnknownDestination,
)
from gateway.dimse.find import UNDECODABLE, decode_identifier, parse_request, validate_query
from gateway.dimse.status import RetrieveStatus, StoreStatus, is_warning
from gateway.dimse.tls_scu import OutboundTls
from gateway.dimse.transcode import UNCOMPRESSED, ConversionError, part10_in, read_part10
from gateway.query.service import QueryService
from storage.index.database import IndexDatabase, IndexDatabaseError
from storage.index.hierarchy import HierarchyQuery, Level
from storage.object_store.base import ObjectStore, ObjectStoreError

log = logging.getLogger(__name__)

PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
MOVE_MODELS = (PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE)
GET_MODELS = (PATIENT_ROOT_GET, STUDY_ROOT_GET)
_FIND_MODEL_OF = {
    PATIENT_ROOT_MOVE: "1.2.840.10008.5.1.4.1.2.1.1",
    PATIENT_ROOT_GET: "1.2.840.10008.5.1.4.1.2.1.1",
    STUDY_ROOT_MOVE: "1.2.840.10008.5.1.4.1.2.2.1",
    STUDY_ROOT_GET: "1.2.840.10008.5.1.4.1.2.2.1",
}
MAX_CONTEXTS = 128  # presentation contexts one association can propose (PS3.8 9.3.2.2: odd IDs 1-255)


@dataclass
class Progress:
    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    def final_status(self, cancelled: bool) -> int:
        if cancelled:
            return RetrieveStatus.CANCELLED
        if self.failed or self.warning:
            return RetrieveStatus.SUB_OPERATIONS_FAILED if self.completed or self.warning else RetrieveStatus.UNABLE_TO_PERFORM_SUB_OPERATIONS
        return RetrieveStatus.SUCCESS


@dataclass(frozen=True)
class Target:
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    object_key: str


# Sends one instance; returns the C-STORE status the receiver answered (or raises).
SendStore = Callable[[Target, bytes], Awaitable[int]]
EmitProgress = Callable[[Progress], Awaitable[None]]


class RetrieveService:
    def __init__(
        self,
        index: IndexDatabase,
        store: ObjectStore,
        *,
        ae_title: str,
        allowed_aets: list[str],
        destinations: dict[str, tuple[str, int]],
        max_instances: int,
        tls: OutboundTls | None = None,
    ) -> None:
        self.tls = tls or OutboundTls({})  # destinations reached over DICOM TLS
        self.queries = QueryService(index)
        self.store = store
        self.ae_title = ae_title
        self.allowed_aets = set(allowed_aets)
        self.destinations = destinations
        self.max_instances = max_instances

    async def targets(self, model: str, identifier: bytes, transfer_syntax: str, calling_ae: str) -> list[Target]:
        """The instances an identifier names; raises the named failure (``gateway.dimse.errors``) to answer."""
        if calling_ae not in self.allowed_aets:
            raise NotAuthorized("calling AE title not allowed to retrieve")
        decoded = decode_identifier(identifier, transfer_syntax)
        try:
            request = parse_request(_FIND_MODEL_OF[model], decoded, limit=self.max_instances)
        except DimseFailure:
            raise
        except Exception as exc:  # a value decoded but unusable: the peer's fault, answered, not a traceback
            raise Undecodable(UNDECODABLE, loggable=f"{UNDECODABLE} ({type(exc).__name__})") from None
        validate_query(self.queries, request)
        unique = {k: v for k, v in request.query.matches.items() if v.strip("*")}
        if not unique:
            raise IdentifierMismatch("no unique key to retrieve by")
        query = HierarchyQuery(Level.IMAGE, unique, limit=self.max_instances + 1)
        try:
            rows = await self.queries.search(query)
        except IndexDatabaseError as exc:
            raise IndexUnavailable("index unavailable", loggable=str(exc)) from None
        if len(rows) > self.max_instances:
            raise OutOfResources(f"more than {self.max_instances} instances; retrieve less at once")
        return [Target(r["SOPClassUID"], r["SOPInstanceUID"], r["TransferSyntaxUID"], r["ObjectKey"]) for r in rows]

    async def send_all(
        self, targets: list[Target], send: SendStore, emit: EmitProgress, cancel: asyncio.Event
    ) -> tuple[Progress, bool]:
        """Send every target, counting outcomes. A sub-operation that fails for any reason is counted failed,
        with its UID, and the others still go: the requester always gets the final response with the counts.
        When the receiving association is gone (``send`` raises ConnectionError), the rest are counted failed
        unread: no object is fetched for a peer that cannot take it."""
        progress = Progress(remaining=len(targets))
        for number, target in enumerate(targets):
            if cancel.is_set():
                return progress, True
            try:
                stored = await asyncio.to_thread(self.store.get, target.object_key)
                status = await send(target, stored)
            except asyncio.CancelledError:
                raise
            except ConnectionError as exc:  # the receiving association is gone: nothing more can be sent on it
                log.warning("retrieve stopped after %d of %d instances: %s", number, len(targets), exc)
                progress.remaining = 0
                progress.failed += len(targets) - number
                progress.failed_uids += [t.sop_instance_uid for t in targets[number:]]
                return progress, False
            except (ObjectStoreError, ConversionError) as exc:
                log.warning("retrieve sub-operation for %s failed: %s", target.sop_instance_uid, exc)
                status = RetrieveStatus.UNABLE_TO_PERFORM_SUB_OPERATIONS
            except Exception as exc:  # a peer gone, a codec's own error, a bug: this instance fails, not the retrieve
                log.warning("retrieve sub-operation for %s failed: %s: %s", target.sop_instance_uid, type(exc).__name__, exc)
                status = RetrieveStatus.UNABLE_TO_PERFORM_SUB_OPERATIONS
            progress.remaining -= 1
            if status == StoreStatus.SUCCESS:
                progress.completed += 1
            elif is_warning(status):
                progress.warning += 1
            else:
                progress.failed += 1
                progress.failed_uids.append(target.sop_instance_uid)
            if progress.remaining:
                await emit(progress)
        return progress, False

    def move_association(self, destination: str, targets: list[Target]) -> MoveAssociation:
        if destination not in self.destinations:
            raise UnknownDestination("move destination unknown")
        host, port = self.destinations[destination]
        return MoveAssociation(
            self.ae_title, destination, host, port, targets, tls_args=self.tls.tls_args(destination, host)
        )


def requested_contexts(targets: list[Target]) -> list[tuple[str, list[str]]]:
    """Presentation contexts to propose to a move destination: per SOP class, one with both uncompressed
    syntaxes (any destination takes one of them) and one for each other syntax instances are stored in, so a
    destination that takes that syntax gets them as stored. Past the 128 contexts an association may propose,
    the stored-syntax ones are left out first: those instances are then sent decoded."""
    sop_classes = sorted({t.sop_class_uid for t in targets})
    plain = [(sop_class, [str(s) for s in UNCOMPRESSED]) for sop_class in sop_classes][:MAX_CONTEXTS]
    stored = sorted({(t.sop_class_uid, t.transfer_syntax_uid) for t in targets if t.transfer_syntax_uid not in UNCOMPRESSED})
    return plain + [(sop_class, [syntax]) for sop_class, syntax in stored][: MAX_CONTEXTS - len(plain)]


class DestinationGone(ConnectionError):
    """The move destination's association ended (aborted, released or dropped): nothing more can go on it."""


class MoveAssociation:
    """The outbound association of a C-MOVE (pynetdicom as SCU, in a thread)."""

    def __init__(
        self, ae_title: str, destination: str, host: str, port: int, targets: list[Target],
        *, tls_args: tuple[ssl.SSLContext, str] | None = None,
    ) -> None:  # fmt: skip
        self.ae = AE(ae_title=ae_title)
        self.tls_args = tls_args  # DICOM TLS: the context and the name the destination's certificate carries
        self.destination, self.host, self.port = destination, host, port
        for sop_class, syntaxes in requested_contexts(targets):
            self.ae.add_requested_context(sop_class, syntaxes)
        self.assoc: Any = None

    def open(self) -> None:
        try:
            self.assoc = self.ae.associate(self.host, self.port, ae_title=self.destination, tls_args=self.tls_args)
        except Exception as exc:
            raise DestinationUnreachable(f"cannot associate with destination {self.destination}: {type(exc).__name__}") from exc
        if not self.assoc.is_established:
            raise DestinationUnreachable(f"destination {self.destination} refused the association or is unreachable")
        # pynetdicom leaves Nagle on; each C-STORE (command PDU, then data) would wait for a delayed ACK.
        self.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, target: Target, stored: bytes) -> int:
        if self.assoc is None or not self.assoc.is_established:
            raise DestinationGone(f"the association with {self.destination} has ended")
        accepted = {str(cx.transfer_syntax[0]) for cx in self.assoc.accepted_contexts if cx.abstract_syntax == target.sop_class_uid}
        if not accepted:
            raise ConversionError(f"destination accepted no context for {target.sop_class_uid}")
        if target.transfer_syntax_uid in accepted:
            wanted = target.transfer_syntax_uid
        elif ExplicitVRLittleEndian in accepted:
            wanted = ExplicitVRLittleEndian
        elif UNCOMPRESSED[1] in accepted:
            wanted = UNCOMPRESSED[1]
        else:
            raise ConversionError(f"cannot convert {target.transfer_syntax_uid} to what the destination accepted")
        part10, _ = part10_in(stored, target.transfer_syntax_uid, wanted, target.sop_class_uid, target.sop_instance_uid)
        ds = read_part10(part10)  # read in the syntax it is now in, so pynetdicom sends it as it is
        status: Dataset = self.assoc.send_c_store(ds)
        if not status or "Status" not in status:  # aborted, timed out or answered nonsense: the association is done
            self.assoc.abort()
            raise DestinationGone(f"destination {self.destination} did not answer the C-STORE")
        return int(status.Status)

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
