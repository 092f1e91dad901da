"""ADT messages: A01 (admit), A04 (register), A08 (update), A05 (pre-admit), A28 and A31 (add and update person
information) record a patient's demographics; A40 merges two.

A40 (ADT_A39 structure) carries one or more PID/MRG pairs: PID is the
surviving patient, MRG-1 the one merged into it. The merged patient's
studies, orders and IDs move to the survivor, its row goes, and the
WADO-RS metadata of the moved instances takes the survivor's identity.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection

from gateway.emr.hl7 import datatypes
from gateway.emr.hl7.errors import ErrorCode, Hl7Error, location
from gateway.emr.hl7.message import Hl7Message
from gateway.emr.hl7.patient import demographics, identifiers, primary
from storage.index.patients import (
    Demographics,
    apply_demographics,
    find_patient,
    merge_patients,
    primary_id,
    record_demographics,
)

# Admit, register, update; pre-admit; add and update person information (a HIS outside any visit).
DEMOGRAPHIC_EVENTS = frozenset({"A01", "A04", "A08", "A05", "A28", "A31"})
MERGE_EVENT = "A40"


@dataclass(frozen=True)
class Merge:
    """One merge done, for the audit trail: the survivor's and the merged patient's IDs."""

    surviving_id: str
    surviving_issuer: str
    merged_id: str
    merged_issuer: str
    studies: int


def record(conn: Connection, msg: Hl7Message, now: dt.datetime) -> Demographics:
    """A01, A04, A08, A05, A28, A31: create or update the patient (an update for an unknown patient creates it);
    what was recorded."""
    recorded = demographics(msg)
    record_demographics(conn, recorded, now)
    return recorded


def _pairs(msg: Hl7Message) -> list[int]:
    """Occurrences of PID, each followed by its MRG; raises Hl7Error when the segments do not pair up."""
    order = [sid for sid in msg.segment_ids if sid in ("PID", "MRG")]
    if not order:
        raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "PID", "the PID segment is missing")
    if order != ["PID", "MRG"] * (len(order) // 2) or len(order) % 2:
        raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "MRG", "each PID must be followed by its MRG segment")
    return list(range(1, len(order) // 2 + 1))


def merge(conn: Connection, msg: Hl7Message, now: dt.datetime) -> list[Merge]:
    """A40: merge each MRG patient into its PID patient; raises Hl7Error for an unknown MRG patient."""
    done = []
    for occurrence in _pairs(msg):
        mrg1 = location("MRG", 1, occurrence=occurrence)
        prior = primary(identifiers(msg.field("MRG", 1, occurrence=occurrence)))
        if prior is None:
            raise Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, mrg1, "MRG-1 has no prior MRN (identifier type MR)")
        datatypes.identifier(prior.value, mrg1, "the prior MRN", 64)
        merged_pk = find_patient(conn, prior.value, prior.issuer)
        if merged_pk is None:
            raise Hl7Error(ErrorCode.UNKNOWN_KEY, mrg1, "the patient to merge (MRG-1) is not known")
        survivor = demographics(msg, occurrence)
        # Not by the citizen ID the merged patient holds too: the survivor is another row, or a new one.
        found = find_patient(conn, survivor.patient_id, survivor.issuer, survivor.citizen_id, exclude=merged_pk)
        if found is None and primary_id(conn, merged_pk) == (survivor.patient_id, survivor.issuer):
            continue  # merged before: the prior MRN is one of the survivor's other IDs by now
        surviving_pk = apply_demographics(conn, found, survivor, now)
        outcome = merge_patients(conn, surviving_pk, merged_pk, now)
        done.append(Merge(survivor.patient_id, survivor.issuer, prior.value, prior.issuer, outcome.studies))
    return done
