"""The modality worklist: orders from the RIS or EMR as scheduled procedure steps, searched by the MWL C-FIND SCP.

An order (ORM^O01, OMI^O23) schedules one or more procedure steps; each is a
row. An order is known by its placer order number, else its filler order
number, else its accession number. It leaves the worklist when cancelled,
when a modality starts it (MPPS, IN PROGRESS; see performed_steps), or when
instances with its accession number (or its pre-assigned Study Instance UID)
are indexed: it is then COMPLETED and remembers the study UID received.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from pydicom.uid import generate_uid
from sqlalchemy import Connection, Engine, String, and_, bindparam, or_, select, union, update

from storage.index.hierarchy import Attribute, Kind, Level, condition
from storage.index.matching import DateRange, InvalidQuery
from storage.index.person_names import fold_name
from storage.index.schema import patient_identifiers, patients, worklist_items

SCHEDULED, CANCELLED, COMPLETED = "SCHEDULED", "CANCELLED", "COMPLETED"
IN_PROGRESS = "IN PROGRESS"  # a modality said it started the step (MPPS): off the worklist


class UnknownOrder(LookupError):
    """No order of the worklist has this placer, filler or accession number."""


class OrderOfAnotherPatient(ValueError):
    """The order known by these numbers belongs to another patient (a number reused, or sent for the wrong patient)."""


@dataclass(frozen=True)
class OrderRef:
    placer: str = ""  # placer order number, with its namespace (ORC-2)
    filler: str = ""  # filler order number, with its namespace (ORC-3)
    accession: str = ""

    @property
    def key(self) -> str:
        return f"P:{self.placer}" if self.placer else f"F:{self.filler}" if self.filler else f"A:{self.accession}"


@dataclass(frozen=True)
class ScheduledStep:
    """One scheduled procedure step of an order, as the MWL returns it."""

    sps_id: str
    accession_number: str
    requested_procedure_id: str
    requested_procedure_description: str = ""
    procedure_code_value: str = ""
    procedure_code_scheme: str = ""
    procedure_code_meaning: str = ""
    sps_description: str = ""
    modality: str = ""
    station_aet: str = ""
    station_name: str = ""
    location: str = ""
    scheduled_date: str = ""  # YYYYMMDD
    scheduled_time: str = ""  # HHMMSS
    referring_physician_name: str = ""
    performing_physician_name: str = ""
    study_uid: str = ""  # "": keep the order's, or make one
    protocol_code_value: str = ""  # Scheduled Protocol Code Sequence: the protocol the modality is to run
    protocol_code_scheme: str = ""
    protocol_code_meaning: str = ""


# Statements built once (bound parameters): an order runs a few per message, and building costs more than running.
_w = worklist_items.c
# Each way an order is known is its own indexed lookup: one OR over the three would scan the whole table.
_MATCHING_PKS = union(
    select(_w.pk).where(_w.order_key == bindparam("b_key")),
    select(_w.pk).where(bindparam("b_placer", type_=String) != "", _w.placer_order_number == bindparam("b_placer")),
    select(_w.pk).where(bindparam("b_filler", type_=String) != "", _w.filler_order_number == bindparam("b_filler")),
)
_EXISTING = select(worklist_items).where(_w.pk.in_(_MATCHING_PKS)).order_by(_w.pk)
_UPDATE = update(worklist_items).where(_w.pk == bindparam("b_pk"))
_INSERT = worklist_items.insert()
_CANCEL = (
    update(worklist_items)
    .where(_w.pk.in_(_MATCHING_PKS), _w.status.in_([SCHEDULED, IN_PROGRESS]))  # a step under way is cancelled too
    .values(status=CANCELLED, updated_at=bindparam("b_now"))
)
_COMPLETE = (
    update(worklist_items)
    .where(
        _w.status.in_([SCHEDULED, IN_PROGRESS]),
        _w.pk.in_(
            union(
                select(_w.pk).where(_w.study_uid == bindparam("b_study")),
                # By accession number only the patient's own order: one typed wrong at the modality (another
                # patient's) must not take that patient's order off the worklist. The same patient is the same
                # index row, or one with the same Patient ID (an issuer the modality did not send).
                select(_w.pk)
                .join(patients, patients.c.pk == _w.patient_pk)
                .where(
                    bindparam("b_accession", type_=String) != "",
                    _w.accession_number == bindparam("b_accession"),
                    or_(_w.patient_pk == bindparam("b_patient_pk"), patients.c.patient_id == bindparam("b_patient_id")),
                ),
            )
        ),
    )
    .values(status=COMPLETED, completed_study_uid=bindparam("b_study"), updated_at=bindparam("b_now"))
)


def _refs(ref: OrderRef) -> dict[str, str]:
    return {"b_key": ref.key, "b_placer": ref.placer, "b_filler": ref.filler}


def _existing(conn: Connection, ref: OrderRef) -> list[Any]:
    return list(conn.execute(_EXISTING, _refs(ref)))


def schedule(conn: Connection, ref: OrderRef, patient_pk: int, steps: Iterable[ScheduledStep], now: dt.datetime) -> list[str]:
    """Create or update the order's steps (new order, or its update); the study UID of each."""
    existing = _existing(conn, ref)
    if any(row.patient_pk != patient_pk for row in existing):
        raise OrderOfAnotherPatient("the order belongs to another patient")
    order_key = existing[0].order_key if existing else ref.key  # first known by its placer number, say: stays so
    by_sps = {row.sps_id: row for row in existing}
    # Every step of one order belongs to one study; made from the order's key, so a re-sent order gets the same.
    order_uid = next((row.study_uid for row in existing), "") or str(generate_uid(entropy_srcs=["worklist", order_key]))
    uids = []
    for step in steps:
        values = {f.name: getattr(step, f.name) for f in fields(step)}  # asdict deep-copies: slow, needless
        values.update(
            study_uid=step.study_uid or (by_sps[step.sps_id].study_uid if step.sps_id in by_sps else order_uid),
            referring_physician_folded=fold_name(step.referring_physician_name),
            performing_physician_folded=fold_name(step.performing_physician_name),
            placer_order_number=ref.placer or (existing[0].placer_order_number if existing else ""),
            filler_order_number=ref.filler or (existing[0].filler_order_number if existing else ""),
            patient_pk=patient_pk,
            updated_at=now,
        )
        row = by_sps.get(step.sps_id)
        if row is None:
            conn.execute(
                _INSERT,
                {"order_key": order_key, "status": SCHEDULED, "created_at": now, "completed_study_uid": "", **values},
            )
        else:
            if row.status not in (COMPLETED, IN_PROGRESS):  # a step a modality has started stays with it
                values["status"] = SCHEDULED  # an order sent again after a cancellation is on again
            conn.execute(_UPDATE, {"b_pk": row.pk, **values})
        uids.append(values["study_uid"])
    return uids


def cancel(conn: Connection, ref: OrderRef, now: dt.datetime) -> int:
    """Take the order's scheduled steps off the worklist; how many. Raises UnknownOrder."""
    if not _existing(conn, ref):
        raise UnknownOrder("no such order in the worklist")
    return int(conn.execute(_CANCEL, {**_refs(ref), "b_now": now}).rowcount or 0)


def complete(conn: Connection, received: Iterable[tuple[str, str, int, str]], now: dt.datetime) -> int:
    """Orders whose images arrived, as (accession number, study UID, patient pk, Patient ID) of the images,
    become COMPLETED; how many steps."""
    count = 0
    for accession, study_uid, patient_pk, patient_id in set(received):
        values = {"b_accession": accession, "b_study": study_uid, "b_patient_pk": patient_pk, "b_patient_id": patient_id, "b_now": now}
        count += int(conn.execute(_COMPLETE, values).rowcount or 0)
    return count


def order_numbers(engine: Engine, study_uid: str) -> tuple[str, str]:
    """(placer, filler) order numbers of the order the study fulfils (its images completed it, or it was
    scheduled with the study's UID); ("", "") when none."""
    by_study = union(
        select(_w.pk).where(_w.completed_study_uid == bindparam("b_uid")),
        select(_w.pk).where(_w.study_uid == bindparam("b_uid"), _w.status != CANCELLED),
    )
    with engine.connect() as conn:
        row = conn.execute(
            select(_w.placer_order_number, _w.filler_order_number).where(_w.pk.in_(by_study)).order_by(_w.pk).limit(1),
            {"b_uid": study_uid},
        ).first()
    return (str(row.placer_order_number), str(row.filler_order_number)) if row else ("", "")


def patient_of(conn: Connection, ref: OrderRef) -> int | None:
    """The patient of a known order (an update may come without its PID)."""
    rows = _existing(conn, ref)
    return int(rows[0].patient_pk) if rows else None


def status_of(conn: Connection, ref: OrderRef) -> list[tuple[str, str, str]]:
    """(SPS ID, status, study UID received) of each step of an order."""
    return [(r.sps_id, r.status, r.completed_study_uid) for r in _existing(conn, ref)]


# ------------------------------------------------------------------ search (MWL C-FIND)


def _attribute(keyword: str, column: Any, kind: Kind) -> Attribute:
    return Attribute(keyword, Level.STUDY, column, kind)


# Matching keys of the MWL (PS3.4 K.6.1.2.2), top level and Scheduled Procedure Step item alike.
ATTRIBUTES: dict[str, Attribute] = {
    a.keyword: a
    for a in (
        _attribute("PatientID", patients.c.patient_id, Kind.TEXT),  # also the patient's other IDs
        _attribute("IssuerOfPatientID", patients.c.issuer, Kind.TEXT),
        _attribute("PatientName", patients.c.patient_name_folded, Kind.NAME),
        _attribute("PatientBirthDate", patients.c.birth_date, Kind.DATE),
        _attribute("PatientSex", patients.c.sex, Kind.TEXT),
        _attribute("AccessionNumber", _w.accession_number, Kind.TEXT),
        _attribute("RequestedProcedureID", _w.requested_procedure_id, Kind.TEXT),
        _attribute("StudyInstanceUID", _w.study_uid, Kind.UID),
        _attribute("ReferringPhysicianName", _w.referring_physician_folded, Kind.NAME),
        _attribute("PlacerOrderNumberImagingServiceRequest", _w.placer_order_number, Kind.TEXT),
        _attribute("FillerOrderNumberImagingServiceRequest", _w.filler_order_number, Kind.TEXT),
        _attribute("ScheduledStationAETitle", _w.station_aet, Kind.TEXT),
        _attribute("Modality", _w.modality, Kind.TEXT),
        _attribute("ScheduledProcedureStepStartDate", _w.scheduled_date, Kind.DATE),
        _attribute("ScheduledProcedureStepStartTime", _w.scheduled_time, Kind.TIME),
        _attribute("ScheduledPerformingPhysicianName", _w.performing_physician_folded, Kind.NAME),
        _attribute("ScheduledProcedureStepID", _w.sps_id, Kind.TEXT),
        _attribute("ScheduledStationName", _w.station_name, Kind.TEXT),
        _attribute("ScheduledProcedureStepLocation", _w.location, Kind.TEXT),
    )
}
_DATE, _TIME = "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime"


@dataclass(frozen=True)
class WorklistQuery:
    matches: dict[str, str] = field(default_factory=dict)  # keyword -> DICOM matching value
    other_patient_ids: tuple[str, ...] = ()  # from Other Patient IDs Sequence items
    limit: int | None = None
    fuzzy_names: bool = False  # negotiated fuzzy semantic matching of person names (hierarchy.fuzzy_name)


def _time_bound(value: str, pad: str) -> str:
    digits = value.replace(":", "").split(".")[0]
    if not digits.isdigit() or len(digits) not in (2, 4, 6):
        raise InvalidQuery(f"{_TIME}: {value!r} is not a time or time range")
    return digits.ljust(6, pad)


def _date_time_range(date: str, time: str) -> Any:
    """Date and time ranges matched together (PS3.4 C.2.2.2.5.1): 0800-, from 8 o'clock of the first day on."""
    days = DateRange.parse(date, _DATE)
    start, _, end = time.partition("-")
    start_time = _time_bound(start, "0") if start else "000000"
    end_time = _time_bound(end, "9") if end else "999999"
    moment = _w.scheduled_date + _w.scheduled_time
    clauses = [_w.scheduled_date != ""]
    if days.start:
        clauses.append(moment >= days.start + start_time)
    if days.end:
        clauses.append(moment <= days.end + end_time)
    return and_(*clauses)


def validate(query: WorklistQuery) -> None:
    """Raise InvalidQuery for a matching value that cannot be used, before any response is sent."""
    list(_conditions(query))


def _conditions(query: WorklistQuery) -> Iterator[Any]:
    matches = {k: v for k, v in query.matches.items() if v.strip("*")}
    date, time = matches.get(_DATE, ""), matches.get(_TIME, "")
    if "-" in date and "-" in time:
        yield _date_time_range(date, time)
        matches.pop(_DATE), matches.pop(_TIME)
    for keyword, value in matches.items():
        yield condition(ATTRIBUTES[keyword], value, fuzzy=query.fuzzy_names)
    if query.other_patient_ids:
        ids = patient_identifiers.c
        yield patients.c.pk.in_(select(ids.patient_pk).where(ids.identifier.in_(query.other_patient_ids)))


_COLUMNS = [
    patients.c.pk.label("patient_pk"),
    patients.c.patient_id.label("PatientID"),
    patients.c.issuer.label("IssuerOfPatientID"),
    patients.c.patient_name.label("PatientName"),
    patients.c.birth_date.label("PatientBirthDate"),
    patients.c.sex.label("PatientSex"),
    *[c for c in worklist_items.c if not c.key.endswith("_folded")],
]


def search(conn: Connection, query: WorklistQuery) -> list[dict[str, Any]]:
    """Scheduled steps matching the query, earliest first, each with its patient's other IDs (``other_ids``)."""
    stmt = (
        select(*_COLUMNS)
        .select_from(worklist_items.join(patients, patients.c.pk == worklist_items.c.patient_pk))
        .where(_w.status == SCHEDULED, *_conditions(query))
        .order_by(_w.scheduled_date, _w.scheduled_time, _w.pk)
    )
    if query.limit is not None:
        stmt = stmt.limit(query.limit)
    rows = [dict(r._mapping) for r in conn.execute(stmt)]
    others: dict[int, list[tuple[str, str, str]]] = {}
    if rows:
        ids = patient_identifiers.c
        found = conn.execute(
            select(ids.patient_pk, ids.identifier, ids.issuer, ids.id_type)
            .where(ids.patient_pk.in_({r["patient_pk"] for r in rows}))
            .order_by(ids.pk)
        )
        for pk, identifier, issuer, id_type in found:
            others.setdefault(pk, []).append((identifier, issuer, id_type))
    for row in rows:
        row["other_ids"] = others.get(row["patient_pk"], [])
    return rows
