"""Modality Performed Procedure Step SCP (N-CREATE, N-SET; PS3.4 Annex F): a modality reports that it started,
completed or discontinued scheduled steps, and the worklist follows (``storage.index.performed_steps``).

Open to the AE titles allowed to query the worklist. Statuses are those of PS3.4 F.7.2 and PS3.7 C.4;
the log names the calling AE, the step's status and how many worklist steps moved, never a value.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from gateway.dimse.errors import (
    DuplicateInstance,
    IndexUnavailable,
    InvalidAttributeValue,
    InvalidInstance,
    MayNoLongerBeUpdated,
    MissingAttribute,
    NoSuchInstance,
    NotAuthorized,
    Undecodable,
)
from gateway.dimse.find import decode_identifier
from gateway.dimse.status import NStatus
from storage.index.database import IndexDatabase, IndexDatabaseError
from storage.index.performed_steps import (
    DISCONTINUED,
    DuplicateStep,
    PerformedSteps,
    StepFinal,
    StepRef,
    UnknownStep,
)
from storage.index.worklist import COMPLETED, IN_PROGRESS
from storage.uids import is_valid_uid

log = logging.getLogger(__name__)

MODALITY_PERFORMED_PROCEDURE_STEP = "1.2.840.10008.3.1.2.3.3"
STATUSES = frozenset({IN_PROGRESS, COMPLETED, DISCONTINUED})


@dataclass(frozen=True)
class NResult:
    status: int
    sop_instance: str
    comment: str | None = None


def _refs(ds: Dataset) -> list[StepRef]:
    patient = str(ds.get("PatientID", "") or "").strip()
    return [
        StepRef(str(item.get("StudyInstanceUID", "") or "").strip(), str(item.get("AccessionNumber", "") or "").strip(),
                str(item.get("ScheduledProcedureStepID", "") or "").strip(), patient)
        for item in ds.ScheduledStepAttributesSequence
    ]  # fmt: skip


def _status(ds: Dataset) -> str:
    return str(ds.get("PerformedProcedureStepStatus", "") or "").strip().upper()


class MppsService:
    def __init__(self, index: IndexDatabase, *, allowed_aets: list[str]) -> None:
        self.steps = PerformedSteps(index.engine)
        self.allowed_aets = set(allowed_aets)

    def allows(self, calling_ae: str) -> bool:
        return "*" in self.allowed_aets or calling_ae in self.allowed_aets

    async def create(self, command: Dataset, dataset: bytes, transfer_syntax: str, *, calling_ae: str) -> NResult:
        """N-CREATE: the step starts (status IN PROGRESS); its scheduled steps leave the worklist.
        Refusals are raised as named failures (``gateway.dimse.errors``) naming the instance."""
        uid = str(command.get("AffectedSOPInstanceUID", "") or "").strip() or str(generate_uid())
        if not self.allows(calling_ae):
            raise NotAuthorized("calling AE title not allowed", sop_instance=uid)
        if not is_valid_uid(uid):
            raise InvalidInstance("invalid SOP Instance UID")
        try:
            ds = decode_identifier(dataset, transfer_syntax)
            status, refs = _status(ds), _refs(ds) if "ScheduledStepAttributesSequence" in ds else None
        except Exception:  # noqa: BLE001 - an undecodable attribute list, whatever pydicom raises
            raise Undecodable("undecodable attribute list", sop_instance=uid) from None
        if refs is None:
            raise MissingAttribute("Scheduled Step Attributes Sequence missing", sop_instance=uid)
        if not status:
            raise MissingAttribute("Performed Procedure Step Status missing", sop_instance=uid)
        if status != IN_PROGRESS:
            raise InvalidAttributeValue("a new step must be IN PROGRESS", sop_instance=uid)
        try:
            moved = await asyncio.to_thread(self.steps.create, uid, refs, calling_ae=calling_ae)
        except DuplicateStep:
            raise DuplicateInstance("step exists already", sop_instance=uid) from None
        except IndexDatabaseError as exc:
            raise IndexUnavailable("index unavailable", loggable=str(exc),
                                   sop_instance=uid) from None  # fmt: skip
        log.info("MPPS N-CREATE from %s: IN PROGRESS, %d worklist step(s) started", calling_ae, moved)
        return NResult(NStatus.SUCCESS, uid)

    async def set(self, command: Dataset, dataset: bytes, transfer_syntax: str, *, calling_ae: str) -> NResult:
        """N-SET: the step goes on, completes (its steps are done) or is discontinued (they are back on the worklist)."""
        uid = str(command.get("RequestedSOPInstanceUID", "") or "").strip()
        if not self.allows(calling_ae):
            raise NotAuthorized("calling AE title not allowed", sop_instance=uid)
        try:
            status = _status(decode_identifier(dataset, transfer_syntax)) or None
        except Exception:  # noqa: BLE001 - an undecodable modification list, whatever pydicom raises
            raise Undecodable("undecodable modification list", sop_instance=uid) from None
        if status is not None and status not in STATUSES:
            raise InvalidAttributeValue("unknown Performed Procedure Step Status", sop_instance=uid)
        try:
            moved = await asyncio.to_thread(self.steps.update, uid, status)
        except UnknownStep:
            raise NoSuchInstance("no such performed procedure step", sop_instance=uid) from None
        except StepFinal:
            raise MayNoLongerBeUpdated("step completed or discontinued", sop_instance=uid) from None
        except IndexDatabaseError as exc:
            raise IndexUnavailable("index unavailable", loggable=str(exc),
                                   sop_instance=uid) from None  # fmt: skip
        log.info("MPPS N-SET from %s: %s, %d worklist step(s) changed", calling_ae, status or "attributes only", moved)
        return NResult(NStatus.SUCCESS, uid)
