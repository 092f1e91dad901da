"""Modality Performed Procedure Step SCP (N-CREATE, N-SET; PS3.4 Annex F): a modality reports that it started,
completed or discontinued scheduled steps, and the worklist follows (``storage.index.performed_steps``).

Open to the AE titles allowed to query the worklist. Statuses are those of PS3.4 F.7.2 and PS3.7 C.4;
the log names the calling AE, the step's status and how many worklist steps moved, never a value.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import IntEnum

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy.exc import SQLAlchemyError

from gateway.dimse.find import decode_identifier
from storage.index.database import IndexDatabase
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


class NStatus(IntEnum):
    SUCCESS = 0x0000
    INVALID_ATTRIBUTE_VALUE = 0x0106
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_SOP_INSTANCE = 0x0112
    INVALID_SOP_INSTANCE = 0x0117
    MISSING_ATTRIBUTE = 0x0120
    NOT_AUTHORIZED = 0x0124
    MAY_NO_LONGER_BE_UPDATED = 0xC310  # MPPS: the step is COMPLETED or DISCONTINUED


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
        """N-CREATE: the step starts (status IN PROGRESS); its scheduled steps leave the worklist."""
        uid = str(command.get("AffectedSOPInstanceUID", "") or "").strip() or str(generate_uid())
        if not self.allows(calling_ae):
            return self._refused(calling_ae, "N-CREATE", NResult(NStatus.NOT_AUTHORIZED, uid, "calling AE title not allowed"))
        if not is_valid_uid(uid):
            return self._refused(calling_ae, "N-CREATE", NResult(NStatus.INVALID_SOP_INSTANCE, "", "invalid SOP Instance UID"))
        try:
            ds = decode_identifier(dataset, transfer_syntax)
            status, refs = _status(ds), _refs(ds) if "ScheduledStepAttributesSequence" in ds else None
        except Exception:  # noqa: BLE001 - an undecodable attribute list, whatever pydicom raises
            return self._refused(calling_ae, "N-CREATE", NResult(NStatus.PROCESSING_FAILURE, uid, "undecodable attribute list"))
        if refs is None:
            return self._refused(calling_ae, "N-CREATE", NResult(NStatus.MISSING_ATTRIBUTE, uid, "Scheduled Step Attributes Sequence missing"))
        if not status:
            return self._refused(calling_ae, "N-CREATE", NResult(NStatus.MISSING_ATTRIBUTE, uid, "Performed Procedure Step Status missing"))
        if status != IN_PROGRESS:
            return self._refused(calling_ae, "N-CREATE", NResult(NStatus.INVALID_ATTRIBUTE_VALUE, uid, "a new step must be IN PROGRESS"))
        try:
            moved = await asyncio.to_thread(self.steps.create, uid, refs, calling_ae=calling_ae)
        except DuplicateStep:
            return self._refused(calling_ae, "N-CREATE", NResult(NStatus.DUPLICATE_SOP_INSTANCE, uid, "step exists already"))
        except SQLAlchemyError as exc:
            log.error("MPPS N-CREATE from %s not recorded: index error %s", calling_ae, type(exc).__name__)
            return NResult(NStatus.PROCESSING_FAILURE, uid, "index unavailable")
        log.info("MPPS N-CREATE from %s: IN PROGRESS, %d worklist step(s) started", calling_ae, moved)
        return NResult(NStatus.SUCCESS, uid)

    async def set(self, command: Dataset, dataset: bytes, transfer_syntax: str, *, calling_ae: str) -> NResult:
        """N-SET: the step goes on, completes (its steps are done) or is discontinued (they are back on the worklist)."""
        uid = str(command.get("RequestedSOPInstanceUID", "") or "").strip()
        if not self.allows(calling_ae):
            return self._refused(calling_ae, "N-SET", NResult(NStatus.NOT_AUTHORIZED, uid, "calling AE title not allowed"))
        try:
            status = _status(decode_identifier(dataset, transfer_syntax)) or None
        except Exception:  # noqa: BLE001 - an undecodable modification list, whatever pydicom raises
            return self._refused(calling_ae, "N-SET", NResult(NStatus.PROCESSING_FAILURE, uid, "undecodable modification list"))
        if status is not None and status not in STATUSES:
            return self._refused(calling_ae, "N-SET", NResult(NStatus.INVALID_ATTRIBUTE_VALUE, uid, "unknown Performed Procedure Step Status"))
        try:
            moved = await asyncio.to_thread(self.steps.update, uid, status)
        except UnknownStep:
            return self._refused(calling_ae, "N-SET", NResult(NStatus.NO_SUCH_SOP_INSTANCE, uid, "no such performed procedure step"))
        except StepFinal:
            return self._refused(calling_ae, "N-SET", NResult(NStatus.MAY_NO_LONGER_BE_UPDATED, uid, "step completed or discontinued"))
        except SQLAlchemyError as exc:
            log.error("MPPS N-SET from %s not recorded: index error %s", calling_ae, type(exc).__name__)
            return NResult(NStatus.PROCESSING_FAILURE, uid, "index unavailable")
        log.info("MPPS N-SET from %s: %s, %d worklist step(s) changed", calling_ae, status or "attributes only", moved)
        return NResult(NStatus.SUCCESS, uid)

    def _refused(self, calling_ae: str, operation: str, result: NResult) -> NResult:
        log.warning("MPPS %s from %s refused: %s", operation, calling_ae, result.comment)
        return result
