"""Modality Performed Procedure Steps: a modality saying it started, finished or gave up steps of the worklist.

N-CREATE (status IN PROGRESS) takes the steps it names off the worklist, so
that no other modality starts them; an N-SET to COMPLETED marks them done;
DISCONTINUED puts them back on the worklist. A step is named by its Study
Instance UID (with its Scheduled Procedure Step ID when given), else by its
accession number (and step ID). A step object COMPLETED or DISCONTINUED can
no longer change (PS3.3 C.4.14, PS3.4 F.7.2). A modality that makes its own
Study Instance UID names the step by accession number: then only a step of
the patient the N-CREATE names (its Patient ID) is taken.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from sqlalchemy import ColumnElement, Connection, Engine, and_, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from storage.index.errors import IndexDatabaseError
from storage.index.schema import patients, performed_steps, worklist_items
from storage.index.times import utc_now
from storage.index.worklist import COMPLETED, IN_PROGRESS, SCHEDULED

DISCONTINUED = "DISCONTINUED"
FINAL = frozenset({COMPLETED, DISCONTINUED})
_p, _w = performed_steps.c, worklist_items.c


class PerformedStepError(Exception):
    pass


class DuplicateStep(PerformedStepError):
    """A performed step with this SOP Instance UID exists already."""


class UnknownStep(PerformedStepError):
    """No performed step has this SOP Instance UID."""


class StepFinal(PerformedStepError):
    """The performed step is COMPLETED or DISCONTINUED: it may no longer be updated."""


@dataclass(frozen=True)
class StepRef:
    """One item of the Scheduled Step Attributes Sequence."""

    study_uid: str = ""
    accession_number: str = ""
    sps_id: str = ""
    patient_id: str = ""  # the N-CREATE's Patient ID


def _conditions(ref: StepRef) -> list[ColumnElement[bool]]:
    """Ways to find the worklist steps of ``ref``, in order: by Study Instance UID, else by accession number
    (of the named patient); [] for an unscheduled procedure."""
    step = [_w.sps_id == ref.sps_id] if ref.sps_id else []
    out: list[ColumnElement[bool]] = []
    if ref.study_uid:
        out.append(and_(_w.study_uid == ref.study_uid, *step))
    if ref.accession_number:
        patient = [_w.patient_pk.in_(select(patients.c.pk).where(patients.c.patient_id == ref.patient_id))] if ref.patient_id else []
        out.append(and_(_w.accession_number == ref.accession_number, *step, *patient))
    return out


def _move(conn: Connection, refs: Sequence[StepRef], *, from_: tuple[str, ...], to: str, done: bool = False) -> int:
    count = 0
    now = utc_now()
    for ref in refs:
        values = {"status": to, "updated_at": now}
        if done:
            values["completed_study_uid"] = ref.study_uid or _w.study_uid
        for condition in _conditions(ref):
            moved = int(conn.execute(update(worklist_items).where(condition, _w.status.in_(from_)).values(**values)).rowcount or 0)
            if moved:
                count += moved
                break
    return count


class PerformedSteps:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, sop_instance_uid: str, refs: Sequence[StepRef], *, calling_ae: str) -> int:
        """Record a step IN PROGRESS; how many worklist steps it took off the worklist.
        Raises DuplicateStep, or IndexDatabaseError when the index cannot record it."""
        now = utc_now()
        try:
            with self.engine.begin() as conn:
                # The unique SOP Instance UID refuses a duplicate, also one another association creates meanwhile.
                conn.execute(
                    insert(performed_steps).values(
                        sop_instance_uid=sop_instance_uid, status=IN_PROGRESS, calling_ae=calling_ae[:16],
                        scheduled=json.dumps([asdict(r) for r in refs]), created_at=now, updated_at=now,
                    )
                )  # fmt: skip
                return _move(conn, refs, from_=(SCHEDULED,), to=IN_PROGRESS)
        except IntegrityError:
            raise DuplicateStep("a performed procedure step with this SOP Instance UID exists") from None
        except SQLAlchemyError as exc:
            raise IndexDatabaseError(f"performed step not recorded: {type(exc).__name__}") from exc

    def update(self, sop_instance_uid: str, status: str | None) -> int:
        """Apply an N-SET (``status`` None: other attributes only); how many worklist steps changed.
        Raises UnknownStep, StepFinal, or IndexDatabaseError when the index cannot record it."""
        try:
            return self._update(sop_instance_uid, status)
        except SQLAlchemyError as exc:
            raise IndexDatabaseError(f"performed step not updated: {type(exc).__name__}") from exc

    def _update(self, sop_instance_uid: str, status: str | None) -> int:
        with self.engine.begin() as conn:
            # Written first: the row (PostgreSQL) or the database (SQLite) is locked before it is read.
            touched = conn.execute(
                update(performed_steps).where(_p.sop_instance_uid == sop_instance_uid, _p.status.not_in(FINAL))
                .values(updated_at=utc_now(), status=status or _p.status)
            ).rowcount  # fmt: skip
            row = conn.execute(select(_p.status, _p.scheduled).where(_p.sop_instance_uid == sop_instance_uid)).first()
            if row is None:
                raise UnknownStep("no performed procedure step with this SOP Instance UID")
            if not touched:
                raise StepFinal("the performed procedure step is completed or discontinued")
            refs = [StepRef(**item) for item in json.loads(row.scheduled)]
            if status == COMPLETED:
                return _move(conn, refs, from_=(SCHEDULED, IN_PROGRESS), to=COMPLETED, done=True)
            if status == DISCONTINUED:
                return _move(conn, refs, from_=(IN_PROGRESS,), to=SCHEDULED)
            return 0

    def status(self, sop_instance_uid: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(_p.status).where(_p.sop_instance_uid == sop_instance_uid)).scalar()
