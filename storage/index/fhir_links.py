"""Each study's resources in the EMR: its Patient (matched by identifier, or chosen by an administrator)
and the ImagingStudy and DiagnosticReport published for it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from storage.index.schema import fhir_links
from storage.index.times import as_utc, utc_now

MATCHED, MANUAL = "matched", "manual"


@dataclass(frozen=True)
class FhirLink:
    study_uid: str
    patient_ref: str
    link_source: str
    imaging_study_ref: str
    diagnostic_report_ref: str
    updated_at: dt.datetime
    imaging_study_digest: str = ""


def upsert_link(conn: Connection, study_uid: str, **values: Any) -> None:
    """Set some of a study's link fields on the caller's connection (both SQLite and PostgreSQL)."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    values = {**values, "updated_at": utc_now()}
    stmt = insert(fhir_links).values(study_uid=study_uid, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["study_uid"], set_=values))


class FhirLinks:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, study_uid: str) -> FhirLink | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(fhir_links).where(fhir_links.c.study_uid == study_uid)).first()
        if row is None:
            return None
        return FhirLink(
            row.study_uid, row.patient_ref, row.link_source, row.imaging_study_ref, row.diagnostic_report_ref,
            as_utc(row.updated_at), row.imaging_study_digest,
        )  # fmt: skip

    def set(self, study_uid: str, **values: str) -> None:
        """Record what was published (``patient_ref``, ``link_source``, ``imaging_study_ref`` and its
        ``imaging_study_digest``, ``diagnostic_report_ref``)."""
        with self.engine.begin() as conn:
            upsert_link(conn, study_uid, **values)
