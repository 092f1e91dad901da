"""The index database: one class for SQLite and PostgreSQL, through SQLAlchemy Core.

All methods are synchronous and thread-safe (a connection per call); async
callers run them in worker threads.
"""

from __future__ import annotations

import datetime as dt
import logging
import zlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, bindparam, case, create_engine, exists, func, literal_column, null, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from storage.index import schema
from storage.index.commit_watch import install_change_counter
from storage.index.errors import IndexDatabaseError
from storage.index.hierarchy import HierarchyQuery
from storage.index.patients import ID_TYPE, patient_json, with_identity
from storage.index.person_names import fold_name
from storage.index.records import InstanceRecord, VaultEntry
from storage.index.study_query import StudyQueries
from storage.index.sqlite_engine import retry_busy, sqlite_engine
from storage.index.schema_evolution import SchemaEvolutionError, add_missing
from storage.index.schema import (
    instance_metadata,
    instance_pixels,
    instances,
    patient_identifiers,
    patients,
    series,
    studies,
)
from storage.index.vault import insert_entries
from storage.index.worklist import complete as complete_orders


log = logging.getLogger(__name__)

_EMR_KEPT = frozenset({"patient_name", "patient_name_folded", "birth_date", "sex"})
_PATIENT_COLUMNS = (patients.c.pk, patients.c.patient_id, patients.c.issuer, patients.c.patient_name, patients.c.birth_date, patients.c.sex)
_PATIENT_BY_PK = select(*_PATIENT_COLUMNS).where(patients.c.pk == bindparam("pk"))
_PATIENT_BY_ID = select(patients.c.pk).where(patients.c.patient_id == bindparam("pid"), patients.c.issuer == bindparam("issuer"))
_ALIAS_OWNERS = (
    select(patient_identifiers.c.patient_pk)
    .where(
        patient_identifiers.c.identifier == bindparam("pid"),
        patient_identifiers.c.issuer == bindparam("issuer"),
        patient_identifiers.c.id_type == ID_TYPE,
    )
    .distinct()
    .limit(2)
)


@dataclass(frozen=True)
class StoredInstance:
    sop_instance_uid: str
    object_key: str
    checksum: str = ""  # SHA-256 of the object; '' when filed by an older release


class IndexDatabase:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        self._upsert_cache: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Any] = {}

    @classmethod
    def open(cls, url: str) -> IndexDatabase:
        if url.startswith("sqlite"):
            engine = sqlite_engine(url)
        else:
            engine = create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8, hide_parameters=True)
        index = cls(engine)
        index.create_schema()
        return index

    def create_schema(self) -> None:
        try:
            retry_busy(self._create_schema, "creating the schema")
        except SchemaEvolutionError as exc:
            raise IndexDatabaseError(f"cannot open index: {exc}") from exc
        except SQLAlchemyError as exc:
            raise IndexDatabaseError(f"cannot open index: {type(exc).__name__}") from exc

    def _create_schema(self) -> None:
        with self.engine.begin() as conn:  # one transaction: two processes starting at once create it once
            schema.metadata.create_all(conn)
            version = conn.execute(select(schema.schema_info.c.version)).scalar()
            if version is None:
                conn.execute(schema.schema_info.insert().values(version=schema.SCHEMA_VERSION))
            elif version != schema.SCHEMA_VERSION:  # checked first: an index this release cannot use is left as it is
                raise IndexDatabaseError(f"index schema version {version}, this gateway needs {schema.SCHEMA_VERSION}")
            added = add_missing(conn, schema.metadata)  # what this release declares beyond an older index
            install_change_counter(conn)  # SQLite: the counter of instance changes (storage.index.instance_locations)
            if added:
                log.info("index brought up to this release: added %s", ", ".join(added))

    def close(self) -> None:
        self.engine.dispose()

    def check(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
        except SQLAlchemyError as exc:
            raise IndexDatabaseError(f"index unreachable: {type(exc).__name__}") from exc

    # ----------------------------------------------------------------- ingest

    def stored_instances(self, sop_instance_uids: Iterable[str]) -> dict[str, StoredInstance]:
        uids = list(set(sop_instance_uids))
        found: dict[str, StoredInstance] = {}
        try:
            with self.engine.connect() as conn:
                for start in range(0, len(uids), 500):
                    rows = conn.execute(
                        select(instances.c.sop_instance_uid, instances.c.object_key, instances.c.checksum).where(
                            instances.c.sop_instance_uid.in_(uids[start : start + 500])
                        )
                    )
                    for uid, key, checksum in rows:
                        found[uid] = StoredInstance(uid, key, checksum)
        except SQLAlchemyError as exc:
            raise IndexDatabaseError(f"index lookup failed: {type(exc).__name__}") from exc
        return found

    def commit(
        self, records: Sequence[InstanceRecord], vault: Sequence[VaultEntry] = (), *, creates: Collection[str] = ()
    ) -> dict[str, StoredInstance]:
        """Insert or update the instances, their patients, studies and series, and their vault entries in one transaction.

        The SOP Instance UIDs in ``creates`` are inserted only if no row has them yet (ON CONFLICT DO NOTHING, so of
        two nodes filing one UID at once the first commit wins, even under other study or series UIDs): the rows
        another filing placed first are returned, by UID, and nothing of ours is kept for them (pixel data
        locations, metadata). Every other record is upserted (the last one wins)."""
        if not records and not vault:
            return {}
        lost: dict[str, StoredInstance] = {}
        now = dt.datetime.now(dt.UTC)
        try:
            def attempt() -> None:  # retried whole when SQLite stays locked: the rows lost are those of the last try
                lost.clear()
                lost.update(self._commit(records, vault, now, creates))

            retry_busy(attempt, "commit")
        except SQLAlchemyError as exc:
            raise IndexDatabaseError(f"index commit failed: {type(exc).__name__}") from exc
        return lost

    def add_vault_entries(self, vault: Sequence[VaultEntry]) -> None:
        """Keep pseudonym vault entries without instances (the de-identification command)."""
        self.commit([], vault)

    def _commit(
        self, records: Sequence[InstanceRecord], vault: Sequence[VaultEntry], now: dt.datetime, creates: Collection[str]
    ) -> dict[str, StoredInstance]:
        with self.engine.begin() as conn:
            touched_series: set[int] = set()
            touched_studies: set[int] = set()
            previous = {
                uid: (series_pk, study_pk)
                for uid, series_pk, study_pk in conn.execute(
                    select(instances.c.sop_instance_uid, instances.c.series_pk, series.c.study_pk)
                    .join(series, series.c.pk == instances.c.series_pk)
                    .where(instances.c.sop_instance_uid.in_([r.sop_instance_uid for r in records]))
                )
            }
            for old_series, old_study in previous.values():
                touched_series.add(old_series)
                touched_studies.add(old_study)
            patient_pks: dict[tuple[str, str], int] = {}
            study_pks: dict[str, int] = {}
            series_pks: dict[str, int] = {}
            identities: dict[tuple[str, str], dict[str, Any] | None] = {}
            for rec in records:
                pkey = (rec.patient_id, rec.issuer_of_patient_id)
                if pkey not in patient_pks:
                    patient_pks[pkey], identities[pkey] = self._upsert_patient(conn, rec, now)
                if rec.study_uid not in study_pks:
                    study_pks[rec.study_uid] = self._upsert_study(conn, rec, patient_pks[pkey], now)
                if rec.series_uid not in series_pks:
                    series_pks[rec.series_uid] = self._upsert_series(conn, rec, study_pks[rec.study_uid])
            lost = self._upsert_instances(conn, records, series_pks, now, identities, creates)
            touched_series.update(series_pks.values())
            touched_studies.update(study_pks.values())
            self._refresh_counts(conn, touched_series, touched_studies)
            complete_orders(
                conn,
                [
                    (r.accession_number, r.study_uid, patient_pks[(r.patient_id, r.issuer_of_patient_id)], r.patient_id)
                    for r in records
                    if r.sop_instance_uid not in lost
                ],
                now,
            )
            insert_entries(conn, self._insert, vault)
        return lost

    def _upsert(self, conn: Connection, table: Any, keys: list[str], values: dict[str, Any]) -> int:
        stmt = self._insert(table).values(**values)
        update_cols = {k: stmt.excluded[k] for k in values if k not in keys}
        upsert = stmt.on_conflict_do_update(index_elements=keys, set_=update_cols).returning(table.c.pk)
        return int(conn.execute(upsert).scalar_one())

    def _upsert_patient(self, conn: Connection, rec: InstanceRecord, now: dt.datetime) -> tuple[int, dict[str, Any] | None]:
        """The instance's patient (made or updated); with its identity for the instances' kept metadata
        when the index's differs from theirs (the EMR's spelling, or the survivor of a merge)."""
        owner = self._alias_owner(conn, rec)
        if owner is not None:
            self._add_other_ids(conn, owner, rec)
            return owner, patient_json(conn.execute(_PATIENT_BY_PK, {"pk": owner}).one())
        values = {
            "patient_id": rec.patient_id,
            "issuer": rec.issuer_of_patient_id,
            "patient_name": rec.patient_name,
            "patient_name_folded": fold_name(rec.patient_name),
            "birth_date": rec.patient_birth_date,
            "sex": rec.patient_sex,
            "updated_at": now,
        }
        stmt = self._insert(patients).values(**values)
        # Demographics the EMR gave (HL7 ADT, orders) win over a modality's spelling.
        from_emr = exists().where(schema.emr_patients.c.patient_pk == literal_column("patients.pk"))
        set_ = {
            k: case((from_emr, patients.c[k]), else_=stmt.excluded[k]) if k in _EMR_KEPT else stmt.excluded[k]
            for k in values
            if k not in ("patient_id", "issuer")
        }
        stmt = stmt.on_conflict_do_update(index_elements=["patient_id", "issuer"], set_=set_)
        row = conn.execute(stmt.returning(*_PATIENT_COLUMNS)).one()
        self._add_other_ids(conn, row.pk, rec)
        kept = (row.patient_name, row.birth_date, row.sex) == (rec.patient_name, rec.patient_birth_date, rec.patient_sex)
        return int(row.pk), None if kept else patient_json(row)

    def _alias_owner(self, conn: Connection, rec: InstanceRecord) -> int | None:
        """The one patient that has the instance's Patient ID (with its issuer) as another ID while no patient
        has it as its own: a late instance with an MRN merged away by ADT^A40 joins the survivor."""
        if not rec.issuer_of_patient_id:  # an ID without issuer is too weak to join another patient by
            return None
        key = {"pid": rec.patient_id, "issuer": rec.issuer_of_patient_id}
        if conn.execute(_PATIENT_BY_ID, key).first() is not None:
            return None
        owners = conn.execute(_ALIAS_OWNERS, key).scalars().all()
        return int(owners[0]) if len(owners) == 1 else None

    def _add_other_ids(self, conn: Connection, patient_pk: int, rec: InstanceRecord) -> None:
        for other in rec.other_patient_ids:
            stmt = self._insert(patient_identifiers).values(
                patient_pk=patient_pk, identifier=other.patient_id, issuer=other.issuer, id_type=other.type
            )
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["patient_pk", "identifier", "issuer"]))

    def _upsert_study(self, conn: Connection, rec: InstanceRecord, patient_pk: int, now: dt.datetime) -> int:
        return self._upsert(
            conn,
            studies,
            ["study_uid"],
            {
                "study_uid": rec.study_uid,
                "patient_pk": patient_pk,
                "study_date": rec.study_date,
                "study_time": rec.study_time,
                "accession_number": rec.accession_number,
                "study_id": rec.study_id,
                "study_description": rec.study_description,
                "referring_physician_name": rec.referring_physician_name,
                "referring_physician_folded": fold_name(rec.referring_physician_name),
                "updated_at": now,
            },
        )

    def _upsert_series(self, conn: Connection, rec: InstanceRecord, study_pk: int) -> int:
        return self._upsert(
            conn,
            series,
            ["series_uid"],
            {
                "series_uid": rec.series_uid,
                "study_pk": study_pk,
                "modality": rec.modality,
                "series_number": rec.series_number,
                "series_description": rec.series_description,
                "body_part_examined": rec.body_part_examined,
                "performed_start_date": rec.performed_start_date,
                "performed_start_time": rec.performed_start_time,
            },
        )

    def _upserts(self, table: Any, keys: tuple[str, ...], columns: tuple[str, ...], *, update: bool = True) -> Any:
        """An upsert of ``columns`` into ``table`` with one bound parameter per column, built once per table
        (executed with a list of rows: one executemany, the statement compiled once); ``update`` False: an
        insert that leaves a row already there alone."""
        cache_key = (f"{table.name}{'' if update else ':create'}", keys, columns)
        stmt = self._upsert_cache.get(cache_key)
        if stmt is None:
            insert = self._insert(table).values({c: bindparam(c) for c in columns})
            if update:
                update_cols = {c: insert.excluded[c] for c in columns if c not in keys}
                stmt = insert.on_conflict_do_update(index_elements=list(keys), set_=update_cols)
            else:
                stmt = insert.on_conflict_do_nothing(index_elements=list(keys))
            self._upsert_cache[cache_key] = stmt
        return stmt

    def _upsert_instances(
        self,
        conn: Connection,
        records: Sequence[InstanceRecord],
        series_pks: dict[str, int],
        now: dt.datetime,
        identities: dict[tuple[str, str], dict[str, Any] | None],
        creates: Collection[str],
    ) -> dict[str, StoredInstance]:
        """The instances, their pixel data locations and their metadata: a few executemany and one lookup of their
        keys, whatever the number of instances (a record given twice: the last one wins, as one upsert after another).
        Returns the rows of ``creates`` UIDs another filing placed first."""
        if not records:
            return {}
        rows = [
            {
                "sop_instance_uid": rec.sop_instance_uid,
                "series_pk": series_pks[rec.series_uid],
                "sop_class_uid": rec.sop_class_uid,
                "instance_number": rec.instance_number,
                "transfer_syntax_uid": rec.transfer_syntax_uid,
                "rows": rec.rows,
                "columns": rec.columns,
                "bits_allocated": rec.bits_allocated,
                "number_of_frames": rec.number_of_frames,
                "size": rec.size,
                "object_key": rec.object_key,
                "checksum": rec.checksum,
                "source_ae": rec.source_ae,
                "received_at": now,
            }
            for rec in records
        ]
        new = [row for row in rows if row["sop_instance_uid"] in creates]
        known = [row for row in rows if row["sop_instance_uid"] not in creates]
        if new:
            conn.execute(self._upserts(instances, ("sop_instance_uid",), tuple(rows[0]), update=False), new)
        if known:
            conn.execute(self._upserts(instances, ("sop_instance_uid",), tuple(rows[0])), known)
        last = {rec.sop_instance_uid: rec for rec in records}
        pks: dict[str, int] = {}
        lost: dict[str, StoredInstance] = {}
        uids = list(last)
        for start in range(0, len(uids), 500):
            found = conn.execute(
                select(instances.c.sop_instance_uid, instances.c.pk, instances.c.object_key, instances.c.checksum).where(
                    instances.c.sop_instance_uid.in_(uids[start : start + 500])
                )
            )
            for uid, pk, key, checksum in found:
                ours = last[uid]
                if uid in creates and (key, checksum) != (ours.object_key, ours.checksum):
                    lost[uid] = StoredInstance(uid, key, checksum)  # another filing's row: leave all of it alone
                else:
                    pks[uid] = int(pk)
        last = {uid: rec for uid, rec in last.items() if uid in pks}
        pixels = [
            {"instance_pk": pks[uid], "data_offset": rec.pixel_offset, "frame_length": rec.frame_length}
            for uid, rec in last.items()
            if rec.pixel_offset is not None and rec.frame_length
        ]
        if pixels:
            conn.execute(self._upserts(instance_pixels, ("instance_pk",), ("instance_pk", "data_offset", "frame_length")), pixels)
        documents = []
        for uid, rec in last.items():
            if rec.metadata_json:
                identity = identities[(rec.patient_id, rec.issuer_of_patient_id)]
                text = rec.metadata_json if identity is None else with_identity(rec.metadata_json, identity)
                documents.append({"instance_pk": pks[uid], "document": zlib.compress(text.encode("utf-8"), 1)})
        if documents:
            conn.execute(self._upserts(instance_metadata, ("instance_pk",), ("instance_pk", "document")), documents)
        return lost

    def _refresh_counts(self, conn: Connection, series_pks: set[int], study_pks: set[int]) -> None:
        if series_pks:
            count = (
                select(func.count()).select_from(instances).where(instances.c.series_pk == series.c.pk).scalar_subquery()
            )
            conn.execute(update(series).where(series.c.pk.in_(series_pks)).values(num_instances=count))
        for study_pk in study_pks:
            rows = conn.execute(
                select(series.c.modality, series.c.num_instances).where(series.c.study_pk == study_pk)
            ).all()
            live = [(m, n) for m, n in rows if n > 0]
            conn.execute(
                update(studies)
                .where(studies.c.pk == study_pk)
                .values(
                    num_series=len(live),
                    num_instances=sum(n for _, n in live),
                    modalities="\\".join(sorted({m for m, _ in live if m})),
                )
            )

    # ----------------------------------------------------------------- queries

    def search_hierarchy(self, query: HierarchyQuery) -> list[dict[str, Any]]:
        """Matches at one level of the information model; see ``storage.index.study_query``."""
        return StudyQueries(self.engine).search(query)

    def count_hierarchy(self, query: HierarchyQuery) -> int:
        """How many matches the query has, paging aside (X-Total-Count)."""
        return StudyQueries(self.engine).count(query)

    def instance_documents(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None, *, with_metadata: bool = True
    ) -> list[dict[str, Any]]:
        """For WADO-RS: each instance's UIDs, object key, transfer syntax and metadata (None when not kept or not asked)."""
        document = instance_metadata.c.document if with_metadata else null().label("document")
        joined = (
            instances.join(series, series.c.pk == instances.c.series_pk)
            .join(studies, studies.c.pk == series.c.study_pk)
            .outerjoin(instance_pixels, instance_pixels.c.instance_pk == instances.c.pk)
        )
        if with_metadata:
            joined = joined.outerjoin(instance_metadata, instance_metadata.c.instance_pk == instances.c.pk)
        stmt = (
            select(
                studies.c.study_uid,
                series.c.series_uid,
                instances.c.sop_instance_uid,
                instances.c.sop_class_uid,
                instances.c.transfer_syntax_uid,
                instances.c.object_key,
                instances.c.checksum,
                instances.c.number_of_frames,
                instance_pixels.c.data_offset,
                instance_pixels.c.frame_length,
                document,
            )
            .select_from(joined)
            .where(studies.c.study_uid == study_uid)
            .order_by(series.c.series_number, series.c.series_uid, instances.c.instance_number, instances.c.sop_instance_uid)
        )
        if series_uid is not None:
            stmt = stmt.where(series.c.series_uid == series_uid)
        if sop_uid is not None:
            stmt = stmt.where(instances.c.sop_instance_uid == sop_uid)
        try:
            with self.engine.connect() as conn:
                rows = [dict(row._mapping) for row in conn.execute(stmt)]
        except SQLAlchemyError as exc:
            raise IndexDatabaseError(f"metadata query failed: {type(exc).__name__}") from exc
        for row in rows:
            document = row.pop("document")
            row["metadata"] = zlib.decompress(document).decode("utf-8") if document is not None else None
        return rows

    def instance_count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(instances)).scalar_one()

    def all_instances(self) -> list[dict[str, Any]]:
        """Every indexed instance with its study and series UIDs (for tests and audits of small archives)."""
        stmt = (
            select(
                instances.c.sop_instance_uid,
                instances.c.object_key,
                instances.c.checksum,
                instances.c.size,
                instances.c.transfer_syntax_uid,
                series.c.series_uid,
                studies.c.study_uid,
            )
            .join(series, series.c.pk == instances.c.series_pk)
            .join(studies, studies.c.pk == series.c.study_pk)
            .order_by(instances.c.sop_instance_uid)
        )
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(stmt)]
