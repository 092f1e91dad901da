"""Patients as the EMR knows them: demographics from ADT and orders, and merges (ADT^A40).

A patient is found, never duplicated, by its MRN and issuer (the patient ID of
its row, or one of its other IDs), then by its national citizen ID. The
EMR's demographics are the reference: once it has given them, ingest keeps
them (``emr_patients``), and the WADO-RS metadata kept per instance follows
them, so that C-FIND, QIDO-RS and WADO-RS all show the EMR's spelling.

Every function works on the caller's connection: one HL7 message, one
transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, exists, func, insert, literal, select, union_all, update
from sqlalchemy.dialects import postgresql, sqlite

from storage.index.person_names import fold_name
from storage.index.records import OtherPatientID
from storage.index.schema import (
    emr_patients,
    instance_metadata,
    instances,
    patient_identifiers,
    patients,
    reconciliation_queue,
    series,
    studies,
    user_patient_ids,
    user_patients,
    worklist_items,
)

# Issuers of Patient ID under which other IDs are kept, as ingest keeps them from Other Patient IDs Sequence.
CITIZEN_ID_ISSUER = "CCCD"  # 12-digit national citizen ID (Căn cước công dân)
INSURANCE_ISSUER = "BHYT"  # health-insurance card number (Bảo hiểm y tế)
ID_TYPE = "TEXT"  # Type of Patient ID (0010,0022) of every ID the EMR gives


class PatientConflict(Exception):
    """An identifier names two different patients of the index; nothing is changed."""


@dataclass(frozen=True)
class Demographics:
    """A patient as the EMR sends it; ``None`` leaves what the index holds unchanged."""

    patient_id: str
    issuer: str
    name: str | None = None  # DICOM PN (family^given^middle^prefix^suffix)
    birth_date: str | None = None  # YYYYMMDD or ""
    sex: str | None = None  # M, F, O or ""
    other_ids: tuple[OtherPatientID, ...] = ()

    @property
    def citizen_id(self) -> str:
        return next((o.patient_id for o in self.other_ids if o.issuer == CITIZEN_ID_ISSUER), "")


@dataclass(frozen=True)
class MergeOutcome:
    studies: int
    instances: int
    worklist_items: int


_UNIT, _RECORD = "\x1f", "\x1e"  # separators of the known IDs; a value holding one makes every ID be upserted


def _new_ids(row: Any, others: Sequence[OtherPatientID]) -> list[OtherPatientID]:
    """The IDs the patient of ``row`` does not have yet (the upsert would skip the others)."""
    known = [record.split(_UNIT) for record in row.known_ids.split(_RECORD)] if row.known_ids else []
    if any(len(record) != 2 for record in known):
        return list(others)
    have = {(issuer, identifier) for issuer, identifier in known}
    return [o for o in others if (o.issuer, o.patient_id) not in have]


# Statements built once (bound parameters): one HL7 message runs a handful, and building costs more than running.
_ids = patient_identifiers.c
_known = patient_identifiers.alias("known")
# With the patient, what saves a statement per message: the IDs it has (issuer US identifier, RS between them),
# and whether it has studies (whose kept metadata a change of name must rewrite).
_KNOWN_IDS = (
    select(func.aggregate_strings(_known.c.issuer + _UNIT + _known.c.identifier, _RECORD))
    .where(_known.c.patient_pk == patients.c.pk)
    .scalar_subquery()
)
_ROW = (patients.c.pk, patients.c.patient_id, patients.c.issuer, patients.c.patient_name, patients.c.patient_name_folded,
        patients.c.birth_date, patients.c.sex, emr_patients.c.patient_pk.is_not(None).label("from_emr"),
        _KNOWN_IDS.label("known_ids"), exists().where(studies.c.patient_pk == patients.c.pk).label("has_studies"))  # fmt: skip
_WITH_EMR = patients.outerjoin(emr_patients, emr_patients.c.patient_pk == patients.c.pk)
# Candidates in order of preference: 1 by MRN and issuer, 2 by the MRN as another ID, 3 by citizen ID.
_CANDIDATES = union_all(
    select(literal(1).label("rank"), *_ROW)
    .select_from(_WITH_EMR)
    .where(patients.c.patient_id == bindparam("mrn"), patients.c.issuer == bindparam("issuer")),
    select(literal(2).label("rank"), *_ROW)
    .select_from(_WITH_EMR.join(patient_identifiers, _ids.patient_pk == patients.c.pk))
    .where(_ids.identifier == bindparam("mrn"), _ids.issuer == bindparam("issuer")),
    select(literal(3).label("rank"), *_ROW)
    .select_from(_WITH_EMR.join(patient_identifiers, _ids.patient_pk == patients.c.pk))
    .where(_ids.identifier == bindparam("citizen"), _ids.issuer == CITIZEN_ID_ISSUER),
)
_BY_PK = select(*_ROW).select_from(_WITH_EMR).where(patients.c.pk == bindparam("pk"))
_UPDATE = update(patients).where(patients.c.pk == bindparam("b_pk"))
_INSERT = insert(patients).returning(patients.c.pk)
_WHAT = {1: "the MRN", 2: "the MRN", 3: "the citizen ID"}


@cache
def _upserts(dialect: str) -> tuple[Any, Any]:
    """(another ID if new, the EMR mark if new) for the dialect."""
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    identifiers = insert_(patient_identifiers).on_conflict_do_nothing(index_elements=["patient_pk", "identifier", "issuer"])
    mark = insert_(emr_patients).on_conflict_do_nothing(index_elements=["patient_pk"])
    return identifiers, mark


def _find(
    conn: Connection, patient_id: str, issuer: str, citizen_id: str = "", exclude: int | None = None
) -> Any | None:
    rows = conn.execute(_CANDIDATES, {"mrn": patient_id, "issuer": issuer, "citizen": citizen_id}).all()
    for rank in (1, 2, 3):
        found = {int(r.pk): r for r in rows if r.rank == rank and r.pk != exclude}
        if len(found) > 1:
            raise PatientConflict(f"{_WHAT[rank]} belongs to {len(found)} patients of the index")
        if found:
            return next(iter(found.values()))
    return None


def find_patient(
    conn: Connection, patient_id: str, issuer: str, citizen_id: str = "", *, exclude: int | None = None
) -> int | None:
    """The patient's pk: by MRN and issuer (its own or one of its other IDs), then by citizen ID; None if unknown.

    ``exclude``: a patient not to be found (the one being merged away). Raises PatientConflict."""
    row = _find(conn, patient_id, issuer, citizen_id, exclude)
    return None if row is None else int(row.pk)


def primary_id(conn: Connection, pk: int) -> tuple[str, str]:
    """The patient's ID and issuer."""
    row = conn.execute(_BY_PK, {"pk": pk}).one()
    return str(row.patient_id), str(row.issuer)


def _add_identifiers(conn: Connection, patient_pk: int, others: Sequence[OtherPatientID]) -> None:
    if others:
        rows = [{"patient_pk": patient_pk, "identifier": o.patient_id, "issuer": o.issuer, "id_type": o.type} for o in others]
        conn.execute(_upserts(conn.dialect.name)[0], rows)


def record_demographics(conn: Connection, demographics: Demographics, now: dt.datetime) -> int:
    """Create or update the patient found by its identifiers; its pk. Raises PatientConflict."""
    d = demographics
    return _apply(conn, _find(conn, d.patient_id, d.issuer, d.citizen_id), d, now)


def apply_demographics(conn: Connection, pk: int | None, demographics: Demographics, now: dt.datetime) -> int:
    """Update patient ``pk`` (None: create it) from the EMR's demographics; its pk."""
    return _apply(conn, None if pk is None else conn.execute(_BY_PK, {"pk": pk}).one(), demographics, now)


def _apply(conn: Connection, row: Any | None, d: Demographics, now: dt.datetime) -> int:
    changes: dict[str, Any] = {}
    if d.name is not None:
        changes.update(patient_name=d.name, patient_name_folded=fold_name(d.name))
    if d.birth_date is not None:
        changes["birth_date"] = d.birth_date
    if d.sex is not None:
        changes["sex"] = d.sex
    if row is None:
        values = {"patient_name": "", "patient_name_folded": "", "birth_date": "", "sex": "", **changes}
        pk = int(conn.execute(_INSERT, {"patient_id": d.patient_id, "issuer": d.issuer, "updated_at": now, **values}).scalar_one())
        others = list(d.other_ids)
    else:
        pk = int(row.pk)
        changed = {k: v for k, v in changes.items() if getattr(row, k) != v}
        if changed:
            conn.execute(_UPDATE, {"b_pk": pk, "updated_at": now, **changed})
            if row.has_studies:  # else no instance has metadata to rewrite
                rewrite_metadata(conn, pk, patient=SimpleNamespace(**{**row._asdict(), **changed}))
        others = list(d.other_ids)
        if (row.patient_id, row.issuer) != (d.patient_id, d.issuer):  # found by another ID: remember this MRN too
            others.append(OtherPatientID(d.patient_id, d.issuer, ID_TYPE))
        others = _new_ids(row, others)
    _add_identifiers(conn, pk, others)
    if row is None or not row.from_emr:
        conn.execute(_upserts(conn.dialect.name)[1], {"patient_pk": pk, "since": now})
    return pk


def merge_patients(conn: Connection, surviving_pk: int, merged_pk: int, now: dt.datetime) -> MergeOutcome:
    """Move the merged patient's studies, orders, IDs and links to the survivor, then remove the merged row."""
    merged = conn.execute(select(patients).where(patients.c.pk == merged_pk)).one()
    surviving_id, surviving_issuer = conn.execute(select(patients.c.patient_id, patients.c.issuer).where(patients.c.pk == surviving_pk)).one()
    moved = [int(pk) for (pk,) in conn.execute(select(studies.c.pk).where(studies.c.patient_pk == merged_pk))]
    # updated_at moves: the EMR link publishes the studies again, under their new patient.
    conn.execute(update(studies).where(studies.c.patient_pk == merged_pk).values(patient_pk=surviving_pk, updated_at=now))
    orders = conn.execute(
        update(worklist_items).where(worklist_items.c.patient_pk == merged_pk).values(patient_pk=surviving_pk, updated_at=now)
    ).rowcount
    ids = patient_identifiers.c
    others = [
        OtherPatientID(r.identifier, r.issuer, r.id_type)
        for r in conn.execute(select(ids.identifier, ids.issuer, ids.id_type).where(ids.patient_pk == merged_pk))
    ]
    # The merged MRN stays findable: a query by it finds the survivor.
    _add_identifiers(conn, surviving_pk, [*others, OtherPatientID(merged.patient_id, merged.issuer, ID_TYPE)])
    _move_user_links(conn, merged, surviving_id, surviving_issuer)
    q = reconciliation_queue.c  # an administrator reconciling one of the moved studies sees its patient now
    conn.execute(update(reconciliation_queue).where(q.patient_pk == merged_pk).values(patient_pk=surviving_pk, updated_at=now))
    conn.execute(delete(patient_identifiers).where(ids.patient_pk == merged_pk))
    conn.execute(delete(emr_patients).where(emr_patients.c.patient_pk == merged_pk))
    conn.execute(delete(patients).where(patients.c.pk == merged_pk))
    rewritten = rewrite_metadata(conn, surviving_pk, moved) if moved else 0
    return MergeOutcome(len(moved), rewritten, int(orders or 0))


def _move_user_links(conn: Connection, merged: Any, surviving_id: str, surviving_issuer: str) -> None:
    """Referring physicians linked to the merged patient see the survivor (links by ID and issuer).

    A link naming no issuer opened the merged patient only if no other patient has its ID: it then follows
    too, naming the survivor's issuer. Otherwise it opened nothing, and is dropped: once the merged row is
    gone, it could open the other patient with that ID."""
    named = user_patient_ids.c
    is_merged = and_(named.patient_id == merged.patient_id, named.issuer == merged.issuer)
    followers = {int(u) for (u,) in conn.execute(select(named.user_pk).where(is_merged))}
    unnamed = user_patients.c
    shared = select(patients.c.pk).where(patients.c.patient_id == merged.patient_id, patients.c.pk != merged.pk).exists()
    if not conn.execute(select(shared)).scalar():
        followers |= {int(u) for (u,) in conn.execute(select(unnamed.user_pk).where(unnamed.patient_id == merged.patient_id))}
    insert_ = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    for user_pk in sorted(followers):
        stmt = insert_(user_patient_ids).values(user_pk=user_pk, patient_id=surviving_id, issuer=surviving_issuer)
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["user_pk", "patient_id", "issuer"]))
    conn.execute(delete(user_patient_ids).where(is_merged))
    conn.execute(delete(user_patients).where(unnamed.patient_id == merged.patient_id))


def patient_json(row: Any) -> dict[str, dict[str, Any]]:
    """The patient's ID, issuer, name, birth date and sex as DICOM JSON attributes, from its index row."""
    def element(vr: str, value: Any) -> dict[str, Any]:
        return {"vr": vr, "Value": [value]} if value else {"vr": vr}

    return {
        "00100010": element("PN", {"Alphabetic": row.patient_name} if row.patient_name else None),
        "00100020": element("LO", row.patient_id),
        "00100021": element("LO", row.issuer),
        "00100030": element("DA", row.birth_date),
        "00100040": element("CS", row.sex),
    }


_DOCUMENTS = (
    select(instance_metadata.c.instance_pk, instance_metadata.c.document, studies.c.pk.label("study_pk"))
    .join(instances, instances.c.pk == instance_metadata.c.instance_pk)
    .join(series, series.c.pk == instances.c.series_pk)
    .join(studies, studies.c.pk == series.c.study_pk)
    .where(studies.c.patient_pk == bindparam("patient_pk"))
)
_SET_DOCUMENT = (
    update(instance_metadata).where(instance_metadata.c.instance_pk == bindparam("b_pk")).values(document=bindparam("b_document"))
)


def rewrite_metadata(conn: Connection, patient_pk: int, study_pks: Sequence[int] | None = None, *, patient: Any = None) -> int:
    """Put the patient's ID, issuer, name, birth date and sex into the kept WADO-RS metadata of its instances.

    ``patient``: the patient's row as it now is, when the caller has it."""
    replacement = patient_json(patient or conn.execute(_BY_PK, {"pk": patient_pk}).one())
    only = None if study_pks is None else set(study_pks)
    updates = []
    for instance_pk, document, study_pk in conn.execute(_DOCUMENTS, {"patient_pk": patient_pk}):
        if only is not None and study_pk not in only:
            continue
        text = with_identity(zlib.decompress(document).decode("utf-8"), replacement)
        updates.append({"b_pk": instance_pk, "b_document": zlib.compress(text.encode("utf-8"), 1)})
    if updates:
        conn.execute(_SET_DOCUMENT, updates)
    return len(updates)


def with_identity(metadata_json: str, identity: dict[str, dict[str, Any]]) -> str:
    """An instance's DICOM JSON with the patient attributes replaced by ``identity`` (see patient_json)."""
    metadata = json.loads(metadata_json)
    metadata.update(identity)
    return json.dumps(dict(sorted(metadata.items())), ensure_ascii=False, separators=(",", ":"))
