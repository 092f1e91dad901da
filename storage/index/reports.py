"""Radiology reports: one per study, a draft saved over and over, then final for good.

Signing a report final also queues a ``diagnostic-report`` message in the
outbox, in the same transaction: a final report always has its message.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from storage.index.outbox import DIAGNOSTIC_REPORT, enqueue
from storage.index.schema import patients, reports, studies
from storage.index.times import as_utc, utc_now

DRAFT, FINAL = "draft", "final"


class ReportError(Exception):
    pass


class NoSuchStudy(ReportError):
    """The study is not in the index."""


class NoReport(ReportError):
    """The study has no report (not even a draft)."""


class ReportFinal(ReportError):
    """The report is final and cannot change."""


class EmptyReport(ReportError):
    """A report with neither findings nor impression cannot be signed."""


class ReportStoreError(ReportError):
    """The index database could not complete the operation."""


@dataclass(frozen=True)
class Report:
    study_uid: str
    status: str
    template: str
    findings: str
    impression: str
    author_username: str
    author_name: str
    created_at: dt.datetime
    updated_at: dt.datetime
    finalized_at: dt.datetime | None
    finalized_by: str
    finalized_by_name: str

    @property
    def final(self) -> bool:
        return self.status == FINAL



def _report(row: Any) -> Report:
    return Report(
        study_uid=row.study_uid, status=row.status, template=row.template, findings=row.findings,
        impression=row.impression, author_username=row.author_username, author_name=row.author_name,
        created_at=as_utc(row.created_at), updated_at=as_utc(row.updated_at),
        finalized_at=as_utc(row.finalized_at), finalized_by=row.finalized_by, finalized_by_name=row.finalized_by_name,
    )  # fmt: skip


def _read(conn: Connection, study_uid: str) -> Report | None:
    row = conn.execute(select(reports).where(reports.c.study_uid == study_uid)).first()
    return None if row is None else _report(row)


class ReportStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def get(self, study_uid: str) -> Report | None:
        try:
            with self.engine.connect() as conn:
                return _read(conn, study_uid)
        except SQLAlchemyError as exc:
            raise ReportStoreError(f"report read failed: {type(exc).__name__}") from exc

    def save_draft(
        self, study_uid: str, *, findings: str, impression: str, template: str, username: str, display_name: str
    ) -> Report:
        """Create or overwrite the study's draft; raises NoSuchStudy, ReportFinal."""
        now = utc_now()
        values = {
            "study_uid": study_uid, "status": DRAFT, "template": template, "findings": findings,
            "impression": impression, "author_username": username, "author_name": display_name or username,
            "created_at": now, "updated_at": now, "finalized_by": "", "finalized_by_name": "",
        }  # fmt: skip
        changed = {k: v for k, v in values.items() if k in ("template", "findings", "impression", "author_username", "author_name", "updated_at")}
        # One statement, so that a concurrent finalisation cannot slip between a check and the write.
        stmt = (
            self._insert(reports)
            .values(**values)
            .on_conflict_do_update(index_elements=["study_uid"], set_=changed, where=reports.c.status == DRAFT)
            .returning(reports.c.pk)
        )
        try:
            with self.engine.begin() as conn:
                if conn.execute(select(studies.c.pk).where(studies.c.study_uid == study_uid)).first() is None:
                    raise NoSuchStudy(f"no study {study_uid} in the index")
                if conn.execute(stmt).first() is None:
                    raise ReportFinal("the report is final")
                return _read(conn, study_uid)  # type: ignore[return-value]
        except SQLAlchemyError as exc:
            raise ReportStoreError(f"report save failed: {type(exc).__name__}") from exc

    def finalize(self, study_uid: str, *, username: str, display_name: str) -> Report:
        """Sign the draft final and queue its outbox message, together; raises NoReport, ReportFinal, EmptyReport."""
        now = utc_now()
        try:
            with self.engine.begin() as conn:
                # Write first: the row is locked (PostgreSQL) or the database is (SQLite) before anything is read.
                done = conn.execute(
                    update(reports)
                    .where(reports.c.study_uid == study_uid, reports.c.status == DRAFT)
                    .values(status=FINAL, finalized_at=now, finalized_by=username, finalized_by_name=display_name or username)
                )
                report = _read(conn, study_uid)
                if report is None:
                    raise NoReport("no report for this study")
                if not done.rowcount:
                    raise ReportFinal("the report is already final")
                if not report.findings.strip() and not report.impression.strip():
                    raise EmptyReport("a report needs findings or an impression to be signed")  # rolls the update back
                enqueue(conn, DIAGNOSTIC_REPORT, study_uid, self._payload(conn, report))
                return report
        except SQLAlchemyError as exc:
            raise ReportStoreError(f"report finalisation failed: {type(exc).__name__}") from exc

    def final_payload(self, study_uid: str) -> dict[str, Any] | None:
        """The outbox payload of the study's final report, as when it was signed; None without one."""
        with self.engine.connect() as conn:
            report = _read(conn, study_uid)
            return self._payload(conn, report) if report is not None and report.status == FINAL else None

    @staticmethod
    def _payload(conn: Connection, report: Report) -> dict[str, Any]:
        study = conn.execute(
            select(
                studies.c.accession_number, studies.c.modalities, studies.c.study_date, studies.c.study_description,
                patients.c.patient_id, patients.c.issuer,
            )
            .join(patients, patients.c.pk == studies.c.patient_pk)
            .where(studies.c.study_uid == report.study_uid)
        ).first()  # fmt: skip
        return {
            "study_uid": report.study_uid,
            "accession_number": study.accession_number if study else "",
            "patient_id": study.patient_id if study else "",
            "issuer_of_patient_id": study.issuer if study else "",
            "study_date": study.study_date if study else "",
            "study_description": study.study_description if study else "",
            "modalities": [m for m in (study.modalities if study else "").split("\\") if m],
            "template": report.template,
            "findings": report.findings,
            "impression": report.impression,
            "finalized_at": report.finalized_at.isoformat() if report.finalized_at else None,
            "finalized_by": report.finalized_by,
            "finalized_by_name": report.finalized_by_name,
        }
