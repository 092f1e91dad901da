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
import io
import logging
import socket
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from gateway.dimse.find import FindRefused, FindStatus, decode_identifier, parse_request, validate_query
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
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


class RetrieveStatus(IntEnum):
    SUCCESS = 0x0000
    PENDING = 0xFF00
    CANCELLED = 0xFE00
    SUB_OPERATIONS_FAILED = 0xB000  # warning: one or more sub-operations failed
    UNKNOWN_DESTINATION = 0xA801
    UNABLE_TO_PERFORM_SUB_OPERATIONS = 0xA702
    IDENTIFIER_MISMATCH = 0xA900
    UNABLE_TO_PROCESS = 0xC000
    NOT_AUTHORIZED = 0x0124


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


def dataset_bytes(stored: bytes, stored_syntax: str, wanted_syntax: str) -> bytes:
    """The dataset of a stored Part 10 file (no file meta), in the wanted transfer syntax."""
    if stored_syntax == wanted_syntax:
        meta_length = int.from_bytes(stored[140:144], "little")  # (0002,0000) right after the preamble and DICM
        return stored[144 + meta_length :]
    if wanted_syntax not in UNCOMPRESSED:
        raise ValueError(f"cannot convert {stored_syntax} to {wanted_syntax}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(io.BytesIO(stored))
    if UID(stored_syntax).is_compressed:
        ds.decompress(generate_instance_uid=False)
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = UID(wanted_syntax).is_implicit_VR
    write_dataset(fp, ds)
    return fp.getvalue()


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
    ) -> None:
        self.index = index
        self.store = store
        self.ae_title = ae_title
        self.allowed_aets = set(allowed_aets)
        self.destinations = destinations
        self.max_instances = max_instances

    async def targets(self, model: str, identifier: bytes, transfer_syntax: str, calling_ae: str) -> list[Target]:
        """The instances an identifier names; raises FindRefused with the status to answer."""
        if calling_ae not in self.allowed_aets:
            raise FindRefused(FindStatus.NOT_AUTHORIZED, "calling AE title not allowed to retrieve")
        request = parse_request(_FIND_MODEL_OF[model], decode_identifier(identifier, transfer_syntax), limit=self.max_instances)
        validate_query(request)
        unique = {k: v for k, v in request.query.matches.items() if v.strip("*")}
        if not unique:
            raise FindRefused(FindStatus.IDENTIFIER_MISMATCH, "no unique key to retrieve by")
        query = HierarchyQuery(Level.IMAGE, unique, limit=self.max_instances + 1)
        try:
            rows = await asyncio.to_thread(self.index.search_hierarchy, query)
        except IndexDatabaseError:
            raise FindRefused(FindStatus.OUT_OF_RESOURCES, "index unavailable") from None
        if len(rows) > self.max_instances:
            raise FindRefused(FindStatus.OUT_OF_RESOURCES, f"more than {self.max_instances} instances; retrieve less at once")
        return [Target(r["SOPClassUID"], r["SOPInstanceUID"], r["TransferSyntaxUID"], r["ObjectKey"]) for r in rows]

    async def send_all(
        self, targets: list[Target], send: SendStore, emit: EmitProgress, cancel: asyncio.Event
    ) -> tuple[Progress, bool]:
        progress = Progress(remaining=len(targets))
        for target in targets:
            if cancel.is_set():
                return progress, True
            try:
                stored = await asyncio.to_thread(self.store.get, target.object_key)
                status = await send(target, stored)
            except (ObjectStoreError, OSError, ValueError, RuntimeError) as exc:
                log.warning("retrieve sub-operation failed: %s", exc)
                status = RetrieveStatus.UNABLE_TO_PERFORM_SUB_OPERATIONS
            progress.remaining -= 1
            if status == 0x0000:
                progress.completed += 1
            elif (status & 0xF000) == 0xB000:
                progress.warning += 1
            else:
                progress.failed += 1
                progress.failed_uids.append(target.sop_instance_uid)
            if progress.remaining:
                await emit(progress)
        return progress, False

    def move_association(self, destination: str, targets: list[Target]) -> MoveAssociation:
        if destination not in self.destinations:
            raise FindRefused(RetrieveStatus.UNKNOWN_DESTINATION, "move destination unknown")
        host, port = self.destinations[destination]
        return MoveAssociation(self.ae_title, destination, host, port, targets)


class MoveAssociation:
    """The outbound association of a C-MOVE (pynetdicom as SCU, in a thread)."""

    def __init__(self, ae_title: str, destination: str, host: str, port: int, targets: list[Target]) -> None:
        self.ae = AE(ae_title=ae_title)
        self.destination, self.host, self.port = destination, host, port
        for sop_class in sorted({t.sop_class_uid for t in targets}):
            syntaxes = sorted({t.transfer_syntax_uid for t in targets if t.sop_class_uid == sop_class} | set(UNCOMPRESSED))
            self.ae.add_requested_context(sop_class, syntaxes[:16])
        self.assoc: Any = None

    def open(self) -> None:
        self.assoc = self.ae.associate(self.host, self.port, ae_title=self.destination)
        if not self.assoc.is_established:
            raise RuntimeError(f"destination {self.destination} refused the association or is unreachable")
        # pynetdicom leaves Nagle on; each C-STORE (command PDU, then data) would wait for a delayed ACK.
        self.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, target: Target, stored: bytes) -> int:
        accepted = [cx for cx in self.assoc.accepted_contexts if cx.abstract_syntax == target.sop_class_uid]
        if not accepted:
            raise ValueError(f"destination accepted no context for {target.sop_class_uid}")
        syntaxes = [str(cx.transfer_syntax[0]) for cx in accepted]
        wanted = target.transfer_syntax_uid if target.transfer_syntax_uid in syntaxes else syntaxes[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(io.BytesIO(stored))
        if wanted != target.transfer_syntax_uid:
            if wanted not in UNCOMPRESSED:
                raise ValueError(f"cannot convert {target.transfer_syntax_uid} to {wanted}")
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                ds.decompress(generate_instance_uid=False)
            ds.file_meta.TransferSyntaxUID = wanted
        status: Dataset = self.assoc.send_c_store(ds)
        if not status:
            raise RuntimeError("destination did not answer the C-STORE")
        return int(status.Status)

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
