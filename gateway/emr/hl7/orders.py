"""Orders (ORM^O01, OMI^O23) as modality worklist items.

ORC-1 says what to do: NW (new) and XO (changed) schedule the order, CA and
DC take it off the worklist. Each ORC starts an order; the OBR, TQ1, IPC and
ZDS segments after it belong to it. Where each MWL attribute comes from:

============================  ==============================================  ============================
attribute                     ORM^O01                                         OMI^O23
============================  ==============================================  ============================
Accession Number              OBR-18, else ORC-3 (filler order number)        IPC-1, else as ORM
Requested Procedure ID        OBR-19, else the accession number               IPC-2
Scheduled Procedure Step ID   OBR-20, else the requested procedure ID         IPC-4 (one step per IPC)
Study Instance UID            ZDS-1 (IHE), else made once per order           IPC-3, else as ORM
Modality                      OBR-24, else OBR-4's code when it is a modality IPC-5
Scheduled Station AE Title    OBR-21, else ``hl7.station_aets`` by modality    IPC-9, else as ORM
Scheduled Station Name        (none)                                          IPC-7
Scheduled Step Location       (none)                                          IPC-8
Start date and time           TQ1-7, ORC-7.4, OBR-27.4, OBR-36, OBR-7         as ORM
Requested Procedure Code      OBR-4 (code^text^coding system)                 as ORM
Step Description              OBR-4 text                                      IPC-6 text, else OBR-4 text
Referring Physician           ORC-12, else PV1-8                              as ORM
Scheduled Performing Phys.    OBR-34                                          as ORM
============================  ==============================================  ============================
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from gateway.emr.hl7 import datatypes
from gateway.emr.hl7.errors import ErrorCode, Hl7Error, location
from gateway.emr.hl7.message import Hl7Message
from gateway.emr.hl7.patient import demographics
from storage.index.patients import Demographics, record_demographics
from storage.index.worklist import OrderOfAnotherPatient, OrderRef, ScheduledStep, UnknownOrder, cancel, patient_of, schedule
from storage.uids import is_valid_uid

SCHEDULE_CONTROLS = frozenset({"NW", "XO"})
CANCEL_CONTROLS = frozenset({"CA", "DC"})
# OBR-4 codes that begin with one of these name the modality when OBR-24 does not (e.g. CT-CHEST, MR_BRAIN).
KNOWN_MODALITIES = ("CR", "CT", "DX", "ES", "IO", "MG", "MR", "NM", "OT", "PT", "PX", "RF", "US", "XA")
DEFAULT_CODING_SCHEME = "99LOCAL"  # a private coding scheme (PS3.16 8.2) for codes sent without one


@dataclass
class _Order:
    """Occurrences of the segments of one order in the message."""

    orc: int
    obr: int | None = None
    tq1: int | None = None
    zds: int | None = None
    ipcs: list[int] = field(default_factory=list)


def _orders(msg: Hl7Message) -> list[_Order]:
    seen: Counter[str] = Counter()
    orders: list[_Order] = []
    for sid in msg.segment_ids:
        seen[sid] += 1
        if sid == "ORC":
            orders.append(_Order(seen[sid]))
        elif orders and sid in ("OBR", "TQ1", "ZDS") and getattr(orders[-1], sid.lower()) is None:
            setattr(orders[-1], sid.lower(), seen[sid])
        elif orders and sid == "IPC":
            orders[-1].ipcs.append(seen[sid])
    if not orders:
        raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "ORC", "the ORC segment is missing")
    return orders


_MESSAGE_LEVEL = object()


class _Reader:
    """Values of one order, with their locations for errors."""

    def __init__(self, msg: Hl7Message, order: _Order, zone: ZoneInfo | None = None) -> None:
        self.msg = msg
        self.order = order
        self.zone = zone  # the hospital's: scheduled times with a UTC offset are given in it

    def get(self, segment: str, number: int, component: int = 1, sub: int = 1, *, occurrence: int | None = None) -> tuple[str, str]:
        """(value, location) of a field of this order's segment (or of the message's first, for PID and PV1)."""
        own: Any = getattr(self.order, segment.lower(), _MESSAGE_LEVEL)  # PID, PV1: the message's
        if occurrence is None and own is None:  # the order has no such segment: not another order's
            return "", location(segment, number)
        n = occurrence if occurrence is not None else own if own is not _MESSAGE_LEVEL else 1
        return self.msg.value(segment, number, component, sub, occurrence=n), location(segment, number, occurrence=n)

    def first(self, *candidates: tuple[str, str]) -> tuple[str, str]:
        return next((c for c in candidates if c[0]), candidates[0])


def _reference(r: _Reader, accession: str) -> OrderRef:
    placer, where = r.first(r.get("ORC", 2), r.get("OBR", 2))
    placer = datatypes.identifier(placer, where, "the placer order number", 64)
    filler, where = r.first(r.get("ORC", 3), r.get("OBR", 3))
    filler = datatypes.identifier(filler, where, "the filler order number", 64)
    if not (placer or filler or accession):
        raise Hl7Error(
            ErrorCode.REQUIRED_FIELD_MISSING, location("ORC", 2, occurrence=r.order.orc),
            "the order has no placer or filler order number (ORC-2, ORC-3) nor accession number",
        )  # fmt: skip
    return OrderRef(placer, filler, accession)


def _accession(r: _Reader, ipc: int | None) -> str:
    candidates = [r.get("OBR", 18), r.get("ORC", 3), r.get("OBR", 3)]
    if ipc is not None:
        candidates.insert(0, r.get("IPC", 1, occurrence=ipc))
    value, where = r.first(*candidates)
    return datatypes.identifier(value, where, "the accession number", 16)


def _when(r: _Reader) -> tuple[str, str]:
    candidates = [r.get("ORC", 7, 4), r.get("OBR", 27, 4), r.get("OBR", 36), r.get("OBR", 7)]
    if r.order.tq1 is not None:
        candidates.insert(0, r.get("TQ1", 7))
    value, where = r.first(*candidates)
    return datatypes.date_time(value, where, "the scheduled start", r.zone) if value else ("", "")


def _xcn(r: _Reader, segment: str, number: int) -> tuple[str, str]:
    """A person name from an XCN field (ID^family^given^middle^suffix^prefix)."""
    parts = [r.get(segment, number, c)[0] for c in range(2, 7)]
    return datatypes.person_name(*parts, where=r.get(segment, number)[1]), parts[0]


def _common(r: _Reader) -> dict[str, str]:
    """What every step of the order shares."""
    if r.order.obr is None:
        raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "OBR", "the order has no OBR segment")
    code, code_where = r.get("OBR", 4, 1)
    modality, where = r.get("OBR", 24)
    modality = datatypes.code_string(modality, where, "the modality (OBR-24)")
    if not modality:
        modality = next((m for m in KNOWN_MODALITIES if code.upper().startswith(m)), "")
    station, where = r.get("OBR", 21)
    referring, family = _xcn(r, "ORC", 12)
    if not family:
        referring, _ = _xcn(r, "PV1", 8)
    performing = [r.get("OBR", 34, 1, sub)[0] for sub in range(2, 7)]
    date, time = _when(r)
    description = datatypes.text(r.get("OBR", 4, 2)[0], 64)
    return {
        "modality": modality,
        "station_aet": datatypes.ae_title(station, where),
        "scheduled_date": date,
        "scheduled_time": time,
        "procedure_code_value": datatypes.identifier(code, code_where, "the procedure code", 64),
        "procedure_code_scheme": datatypes.text(r.get("OBR", 4, 3)[0], 16) or (DEFAULT_CODING_SCHEME if code else ""),
        "procedure_code_meaning": description,
        "requested_procedure_description": description,
        "sps_description": description,
        "referring_physician_name": referring,
        "performing_physician_name": datatypes.person_name(*performing, where=r.get("OBR", 34)[1]),
    }


def _protocol_code(r: _Reader, segment: str, field: int, first: int, *, occurrence: int | None = None) -> dict[str, str]:
    """The protocol (CWE: code, text, coding system from component ``first`` on) as the step's Scheduled
    Protocol Code; none without a code."""
    code, where = r.get(segment, field, first, occurrence=occurrence)
    if not code:
        return {}
    text = datatypes.text(r.get(segment, field, first + 1, occurrence=occurrence)[0], 64)
    return {
        "protocol_code_value": datatypes.identifier(code, where, "the protocol code", 64),
        "protocol_code_scheme": datatypes.text(r.get(segment, field, first + 2, occurrence=occurrence)[0], 16) or DEFAULT_CODING_SCHEME,
        "protocol_code_meaning": text or code,
    }


def _study_uid(value: str, where: str) -> str:
    if value and not is_valid_uid(value):
        raise Hl7Error(ErrorCode.DATA_TYPE, where, "the Study Instance UID is not a valid DICOM UID")
    return value


def _orm_step(r: _Reader, common: dict[str, str], stations: dict[str, str]) -> ScheduledStep:
    accession = _accession(r, None)
    procedure, where = r.get("OBR", 19)
    procedure = datatypes.identifier(procedure, where, "the requested procedure ID", 16) or accession
    sps, where = r.get("OBR", 20)
    sps = datatypes.identifier(sps, where, "the scheduled procedure step ID", 16) or procedure or "1"
    values = dict(common, station_aet=common["station_aet"] or stations.get(common["modality"], ""))
    values.update(_protocol_code(r, "OBR", 4, 4))  # OBR-4's alternate identifier, as IHE Scheduled Workflow maps it
    uid = _study_uid(*r.get("ZDS", 1)) if r.order.zds is not None else ""
    return ScheduledStep(sps_id=sps, accession_number=accession, requested_procedure_id=procedure, study_uid=uid, **values)


def _omi_step(r: _Reader, ipc: int, common: dict[str, str], stations: dict[str, str]) -> ScheduledStep:
    def required(number: int, what: str, max_length: int) -> str:
        value, where = r.get("IPC", number, occurrence=ipc)
        if not value:
            raise Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, where, f"IPC-{number} {what} missing")
        return datatypes.identifier(value, where, f"the {what}", max_length)

    accession = required(1, "accession number", 16)
    procedure = required(2, "requested procedure ID", 16)
    sps = required(4, "scheduled procedure step ID", 16)
    modality = datatypes.code_string(required(5, "modality", 16), r.get("IPC", 5, occurrence=ipc)[1], "the modality (IPC-5)")
    station, where = r.get("IPC", 9, occurrence=ipc)
    station = datatypes.ae_title(station, where) or stations.get(modality, "")
    protocol = datatypes.text(r.get("IPC", 6, 2, occurrence=ipc)[0], 64)
    values = dict(
        common,
        **_protocol_code(r, "IPC", 6, 1, occurrence=ipc),
        modality=modality,
        station_aet=station,
        station_name=datatypes.text(r.get("IPC", 7, occurrence=ipc)[0], 16),
        location=datatypes.text(r.get("IPC", 8, occurrence=ipc)[0], 16),
        sps_description=protocol or common["sps_description"],
    )
    uid = _study_uid(*r.get("IPC", 3, occurrence=ipc))
    return ScheduledStep(sps_id=sps, accession_number=accession, requested_procedure_id=procedure, study_uid=uid, **values)


def process(
    conn: Connection, msg: Hl7Message, now: dt.datetime, *, imaging: bool, stations: dict[str, str], zone: ZoneInfo | None = None
) -> Demographics | None:
    """Apply every order of an ORM^O01 (``imaging`` False) or OMI^O23 message; the patient its PID recorded."""
    patient_pk: int | None = None
    recorded: Demographics | None = None
    for order in _orders(msg):
        r = _Reader(msg, order, zone)
        control, where = r.get("ORC", 1)
        control = control.upper()
        ipcs = order.ipcs if imaging else []
        if imaging and not ipcs and control in SCHEDULE_CONTROLS:
            raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "IPC", "the imaging order has no IPC segment")
        ref = _reference(r, _accession(r, ipcs[0] if ipcs else None))
        if control in CANCEL_CONTROLS:
            try:
                cancel(conn, ref, now)
            except UnknownOrder:
                raise Hl7Error(ErrorCode.UNKNOWN_KEY, location("ORC", 2, occurrence=order.orc), "no such order") from None
        elif control in SCHEDULE_CONTROLS:
            if msg.count("PID"):
                if patient_pk is None:
                    recorded = demographics(msg)
                    patient_pk = record_demographics(conn, recorded, now)
            elif control == "XO" and (known := patient_of(conn, ref)) is not None:
                patient_pk = known
            else:
                raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "PID", "the PID segment is missing")
            common = _common(r)
            steps = [_omi_step(r, ipc, common, stations) for ipc in ipcs] if imaging else [_orm_step(r, common, stations)]
            try:
                schedule(conn, ref, patient_pk, steps, now)
            except OrderOfAnotherPatient:
                where = location("ORC", 2, occurrence=order.orc)
                raise Hl7Error(ErrorCode.DUPLICATE_KEY, where, "the order number belongs to another patient's order") from None
        elif not control:
            raise Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, where, "ORC-1 order control missing")
        else:
            raise Hl7Error(ErrorCode.TABLE_VALUE_NOT_FOUND, where, "order control not supported (NW, XO, CA, DC)")
    return recorded
