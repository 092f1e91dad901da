"""One study as the index knows it, whole (patient and other IDs, series, instances), for publishing it elsewhere."""

from __future__ import annotations

import datetime as dt
import json
import zlib
from dataclasses import dataclass

from sqlalchemy import Engine, select

from storage.index.schema import instance_metadata, instances, patient_identifiers, patients, series, studies
from storage.index.times import as_utc

PATIENT_IDENTITY_REMOVED = "00120062"


@dataclass(frozen=True)
class OtherId:
    value: str
    issuer: str
    type: str


@dataclass(frozen=True)
class ExportPatient:
    pk: int
    patient_id: str
    issuer: str
    other_ids: tuple[OtherId, ...]
    birth_date: str = ""  # YYYYMMDD
    sex: str = ""  # M, F, O
    name: str = ""  # DICOM PN


@dataclass(frozen=True)
class ExportInstance:
    sop_instance_uid: str
    sop_class_uid: str
    number: int | None


@dataclass(frozen=True)
class ExportSeries:
    series_uid: str
    number: int | None
    modality: str
    description: str
    body_part: str
    started_date: str
    started_time: str
    instances: tuple[ExportInstance, ...]


@dataclass(frozen=True)
class ExportStudy:
    study_uid: str
    study_date: str
    study_time: str
    accession_number: str
    description: str
    modalities: tuple[str, ...]
    updated_at: dt.datetime
    patient: ExportPatient
    series: tuple[ExportSeries, ...]
    identity_removed: bool  # Patient Identity Removed (0012,0062) = YES: the index holds pseudonyms

    @property
    def number_of_instances(self) -> int:
        return sum(len(s.instances) for s in self.series)


def read_study(engine: Engine, study_uid: str) -> ExportStudy | None:
    with engine.connect() as conn:
        study = conn.execute(
            select(studies, patients.c.patient_id, patients.c.issuer, patients.c.birth_date, patients.c.sex, patients.c.patient_name)
            .join(patients, patients.c.pk == studies.c.patient_pk)
            .where(studies.c.study_uid == study_uid)
        ).first()
        if study is None:
            return None
        others = tuple(
            OtherId(r.identifier, r.issuer, r.id_type)
            for r in conn.execute(
                select(patient_identifiers).where(patient_identifiers.c.patient_pk == study.patient_pk)
                .order_by(patient_identifiers.c.pk)
            )
        )  # fmt: skip
        rows = conn.execute(
            select(
                series.c.pk.label("series_pk"), series.c.series_uid, series.c.series_number, series.c.modality,
                series.c.series_description, series.c.body_part_examined, series.c.performed_start_date,
                series.c.performed_start_time, instances.c.pk.label("instance_pk"), instances.c.sop_instance_uid,
                instances.c.sop_class_uid, instances.c.instance_number,
            )
            .join(instances, instances.c.series_pk == series.c.pk)
            .where(series.c.study_pk == study.pk)
            .order_by(series.c.series_number, series.c.series_uid, instances.c.instance_number, instances.c.sop_instance_uid)
        ).all()  # fmt: skip
        document = None
        if rows:
            document = conn.execute(
                select(instance_metadata.c.document).where(instance_metadata.c.instance_pk == rows[0].instance_pk)
            ).scalar()
    grouped: dict[int, list] = {}
    for row in rows:
        grouped.setdefault(row.series_pk, []).append(row)
    out_series = tuple(
        ExportSeries(
            rs[0].series_uid, rs[0].series_number, rs[0].modality, rs[0].series_description, rs[0].body_part_examined,
            rs[0].performed_start_date, rs[0].performed_start_time,
            tuple(ExportInstance(r.sop_instance_uid, r.sop_class_uid, r.instance_number) for r in rs),
        )
        for rs in grouped.values()
    )  # fmt: skip
    return ExportStudy(
        study_uid=study.study_uid, study_date=study.study_date, study_time=study.study_time,
        accession_number=study.accession_number, description=study.study_description,
        modalities=tuple(m for m in study.modalities.split("\\") if m), updated_at=as_utc(study.updated_at),
        patient=ExportPatient(study.patient_pk, study.patient_id, study.issuer, others, study.birth_date, study.sex, study.patient_name),
        series=out_series, identity_removed=_identity_removed(document),
    )  # fmt: skip


def _identity_removed(document: bytes | None) -> bool:
    """Whether the index holds pseudonyms for the study (every instance of a study went through one rule, so
    its first tells). Without a readable document: yes (the original identity is then looked up, never a
    pseudonym sent to the EMR as an MRN)."""
    if document is None:
        return True
    try:
        element = json.loads(zlib.decompress(document)).get(PATIENT_IDENTITY_REMOVED) or {}
    except (zlib.error, ValueError):
        return True
    return [str(v).strip().upper() for v in element.get("Value", [])] == ["YES"]
