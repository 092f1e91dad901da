"""PID (and MRG) segments as the patients and patient identifiers of the index.

PID-3 repeats; each repetition is a CX ``ID^^^assigning authority^type``:

- type ``MR`` (else ``PI``), the first one: the hospital MRN, kept as Patient
  ID with the assigning authority (its namespace ID, else its universal ID)
  as Issuer of Patient ID;
- type ``NI``, ``CZ`` or ``NNVNM``, or authority ``CCCD``: the 12-digit
  national citizen ID, kept as another ID with issuer ``CCCD``;
- type ``HC`` or ``NH``, or authority ``BHYT``: the health-insurance number,
  another ID with issuer ``BHYT``;
- anything else (another hospital's MRN...): another ID, with its authority
  (else its type code) as issuer.

These are the issuers ingest keeps from a DICOM Other Patient IDs Sequence,
so an ID from the EMR and one from a modality are the same row.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.emr.hl7 import datatypes
from gateway.emr.hl7.datatypes import NULL
from gateway.emr.hl7.errors import ErrorCode, Hl7Error, location
from gateway.emr.hl7.message import Field, Hl7Message
from storage.index.patients import CITIZEN_ID_ISSUER, ID_TYPE, INSURANCE_ISSUER, Demographics
from storage.index.records import OtherPatientID

MRN_TYPES = ("MR", "PI")  # in order of preference
CITIZEN_ID_TYPES = frozenset({"NI", "CZ", "NNVNM"})
INSURANCE_TYPES = frozenset({"HC", "NH"})


@dataclass(frozen=True)
class Cx:
    """One repetition of a CX field."""

    value: str
    issuer: str  # assigning authority: namespace ID, else universal ID
    type_code: str
    repetition: int


def _component(repetition: list[list[str]], number: int, sub: int = 1) -> str:
    try:
        return repetition[number - 1][sub - 1]
    except IndexError:
        return ""


def identifiers(field: Field) -> list[Cx]:
    out = []
    for number, rep in enumerate(field, start=1):
        value = _component(rep, 1)
        if value and value != NULL:
            issuer = _component(rep, 4, 1) or _component(rep, 4, 2)
            out.append(Cx(value, issuer, _component(rep, 5).upper(), number))
    return out


def primary(ids: list[Cx]) -> Cx | None:
    """The MRN among a CX list: the first of type MR, else of type PI."""
    for type_code in MRN_TYPES:
        found = next((cx for cx in ids if cx.type_code == type_code), None)
        if found is not None:
            return found
    return None


def _other_id(cx: Cx, where: str) -> OtherPatientID:
    if cx.type_code in CITIZEN_ID_TYPES or cx.issuer.upper() == CITIZEN_ID_ISSUER:
        if len(cx.value) != 12 or not cx.value.isdigit():
            raise Hl7Error(ErrorCode.DATA_TYPE, where, "the citizen ID (CCCD) must be 12 digits")
        return OtherPatientID(cx.value, CITIZEN_ID_ISSUER, ID_TYPE)
    value = datatypes.identifier(cx.value, where, "a patient identifier", 64)
    if cx.type_code in INSURANCE_TYPES or cx.issuer.upper() == INSURANCE_ISSUER:
        return OtherPatientID(value, INSURANCE_ISSUER, ID_TYPE)
    issuer = datatypes.identifier(cx.issuer or cx.type_code, where, "an assigning authority", 64)
    return OtherPatientID(value, issuer, ID_TYPE)


def _name(msg: Hl7Message, occurrence: int) -> str | None:
    field = msg.field("PID", 5, occurrence=occurrence)
    if not field:
        return None
    legal = next((rep for rep in field if _component(rep, 7).upper() == "L"), field[0])
    family = _component(legal, 1)
    if family == NULL:
        return ""
    return datatypes.person_name(
        family, _component(legal, 2), _component(legal, 3), _component(legal, 4), _component(legal, 5),
        where=location("PID", 5, occurrence=occurrence),
    )  # fmt: skip


def demographics(msg: Hl7Message, occurrence: int = 1) -> Demographics:
    """The patient of the ``occurrence``-th PID segment; raises Hl7Error naming the segment and field at fault."""
    if msg.count("PID") < occurrence:
        raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "PID", "the PID segment is missing")
    pid3 = location("PID", 3, occurrence=occurrence)
    ids = identifiers(msg.field("PID", 3, occurrence=occurrence))
    mrn = primary(ids)
    if mrn is None:
        raise Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, pid3, "PID-3 has no MRN (identifier type MR)")
    where = location("PID", 3, mrn.repetition, occurrence=occurrence)
    patient_id = datatypes.identifier(mrn.value, where, "the MRN", 64)
    issuer = datatypes.identifier(mrn.issuer, where, "the MRN's assigning authority", 64)
    others = tuple(
        _other_id(cx, location("PID", 3, cx.repetition, occurrence=occurrence)) for cx in ids if cx is not mrn
    )
    birth = msg.value("PID", 7, occurrence=occurrence)
    sex = msg.value("PID", 8, occurrence=occurrence)
    return Demographics(
        patient_id=patient_id,
        issuer=issuer,
        name=_name(msg, occurrence),
        birth_date=(
            None if not birth else "" if birth == NULL
            else datatypes.date_time(birth, location("PID", 7, occurrence=occurrence), "PID-7 date of birth")[0]
        ),
        sex=None if not sex else "" if sex == NULL else datatypes.sex(sex, location("PID", 8, occurrence=occurrence)),
        other_ids=others,
    )  # fmt: skip
