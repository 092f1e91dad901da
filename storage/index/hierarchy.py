"""Searching the index at any level of the DICOM information model (PS3.4 C.2.2 / C.6): patient, study, series, image.

A :class:`HierarchyQuery` holds matching keys already validated; :func:`search`
turns them into one SQL query over the level's table joined with the levels
above it. Matching follows PS3.4 C.2.2.2: single value, wildcard (``*``,
``?``), range (dates and times), list of UIDs, universal (empty value);
person names match without case or accents; a patient ID matches the
patient's other IDs too (citizen ID, insurance number). Studies carry their
reading status (Study Status ID: UNREAD, IN PROGRESS, READ) from the reports
table, and results can be sorted on any matchable attribute (``order``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sqlalchemy import Connection, and_, case, func, or_, select

from storage.index.person_names import fold_pattern
from storage.index.schema import instances, patient_identifiers, patients, reports, series, studies
from storage.index.matching import DateRange, InvalidQuery
from storage.index.scope import Scope, scope_condition
from storage.uids import is_valid_uid


class Level(str, Enum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        return list(Level).index(self)


class Kind(str, Enum):
    TEXT = "text"  # exact or wildcard, case-sensitive (SH, LO, CS)
    NAME = "name"  # PN: folded, case- and accent-insensitive
    UID = "uid"  # single UID or backslash-separated list
    DATE = "date"  # single date or range
    TIME = "time"  # single time or range
    NUMBER = "number"  # IS / US: exact
    STATUS = "status"  # Study Status ID: one of STUDY_STATUSES, or a backslash-separated list of them
    RETURN_ONLY = "return"  # counts and derived values: returned, never matched


@dataclass(frozen=True)
class Attribute:
    keyword: str
    level: Level
    column: Any
    kind: Kind


# A study's reading status, from its report: none, a draft, or final.
STUDY_STATUSES = {"UNREAD": None, "IN PROGRESS": "draft", "READ": "final"}
_study_status = case((reports.c.status == "final", "READ"), (reports.c.status == "draft", "IN PROGRESS"), else_="UNREAD")
# Sorted in reading order: what awaits a radiologist first.
_study_status_rank = case((reports.c.status == "final", 2), (reports.c.status == "draft", 1), else_=0)

_ATTRIBUTES = [
    Attribute("PatientID", Level.PATIENT, patients.c.patient_id, Kind.TEXT),
    Attribute("IssuerOfPatientID", Level.PATIENT, patients.c.issuer, Kind.TEXT),
    Attribute("PatientName", Level.PATIENT, patients.c.patient_name_folded, Kind.NAME),
    Attribute("PatientBirthDate", Level.PATIENT, patients.c.birth_date, Kind.DATE),
    Attribute("PatientSex", Level.PATIENT, patients.c.sex, Kind.TEXT),
    Attribute("StudyInstanceUID", Level.STUDY, studies.c.study_uid, Kind.UID),
    Attribute("StudyDate", Level.STUDY, studies.c.study_date, Kind.DATE),
    Attribute("StudyTime", Level.STUDY, studies.c.study_time, Kind.TIME),
    Attribute("AccessionNumber", Level.STUDY, studies.c.accession_number, Kind.TEXT),
    Attribute("StudyID", Level.STUDY, studies.c.study_id, Kind.TEXT),
    Attribute("StudyDescription", Level.STUDY, studies.c.study_description, Kind.TEXT),
    Attribute("ReferringPhysicianName", Level.STUDY, studies.c.referring_physician_folded, Kind.NAME),
    Attribute("ModalitiesInStudy", Level.STUDY, studies.c.modalities, Kind.TEXT),
    Attribute("StudyStatusID", Level.STUDY, _study_status, Kind.STATUS),
    Attribute("NumberOfStudyRelatedSeries", Level.STUDY, studies.c.num_series, Kind.RETURN_ONLY),
    Attribute("NumberOfStudyRelatedInstances", Level.STUDY, studies.c.num_instances, Kind.RETURN_ONLY),
    Attribute("SeriesInstanceUID", Level.SERIES, series.c.series_uid, Kind.UID),
    Attribute("Modality", Level.SERIES, series.c.modality, Kind.TEXT),
    Attribute("SeriesNumber", Level.SERIES, series.c.series_number, Kind.NUMBER),
    Attribute("SeriesDescription", Level.SERIES, series.c.series_description, Kind.TEXT),
    Attribute("BodyPartExamined", Level.SERIES, series.c.body_part_examined, Kind.TEXT),
    Attribute("PerformedProcedureStepStartDate", Level.SERIES, series.c.performed_start_date, Kind.DATE),
    Attribute("PerformedProcedureStepStartTime", Level.SERIES, series.c.performed_start_time, Kind.TIME),
    Attribute("NumberOfSeriesRelatedInstances", Level.SERIES, series.c.num_instances, Kind.RETURN_ONLY),
    Attribute("SOPInstanceUID", Level.IMAGE, instances.c.sop_instance_uid, Kind.UID),
    Attribute("SOPClassUID", Level.IMAGE, instances.c.sop_class_uid, Kind.UID),
    Attribute("InstanceNumber", Level.IMAGE, instances.c.instance_number, Kind.NUMBER),
    Attribute("Rows", Level.IMAGE, instances.c.rows, Kind.NUMBER),
    Attribute("Columns", Level.IMAGE, instances.c.columns, Kind.NUMBER),
    Attribute("NumberOfFrames", Level.IMAGE, instances.c.number_of_frames, Kind.NUMBER),
    Attribute("TransferSyntaxUID", Level.IMAGE, instances.c.transfer_syntax_uid, Kind.RETURN_ONLY),
]
ATTRIBUTES: dict[str, Attribute] = {a.keyword: a for a in _ATTRIBUTES}

# What a returned row holds besides the matched columns: the unfolded names and the patient-level counts.
_DISPLAY_COLUMNS = {
    "PatientName": patients.c.patient_name,
    "ReferringPhysicianName": studies.c.referring_physician_name,
}
PATIENT_COUNTS = ("NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances")

# The unique key of each level (PS3.4 C.6.1.1 and C.6.2.1).
UNIQUE_KEYS = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}


@dataclass(frozen=True)
class HierarchyQuery:
    level: Level
    matches: dict[str, str] = field(default_factory=dict)  # keyword -> DICOM matching value
    other_patient_ids: tuple[str, ...] = ()  # from Other Patient IDs Sequence items
    limit: int | None = None
    offset: int = 0
    # Pseudonymous patient IDs the vault maps PatientID to (authorised re-identifying queries only).
    patient_pseudonyms: tuple[str, ...] = ()
    # What a referring physician or a share link may see (storage.index.scope); None is everything.
    scope: Scope | None = None
    # Sort keys before the level's own order: (keyword, descending), from :func:`parse_order`.
    order: tuple[tuple[str, bool], ...] = ()
    # Fuzzy matching of person names (QIDO-RS ``fuzzymatching=true``, C-FIND extended negotiation): see fuzzy_name.
    fuzzy_names: bool = False


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _text_condition(column: Any, value: str) -> Any:
    if "*" in value or "?" in value:
        return column.like(_like(value), escape="\\")
    return column == value


def _range_condition(column: Any, value: str, kind: Kind, keyword: str) -> Any:
    if kind is Kind.DATE:
        bounds = DateRange.parse(value, keyword)
        start, end = bounds.start, bounds.end
    else:
        start, _, end = value.partition("-") if "-" in value else (value, "", value)
        for part in (start, end):
            if part and not part.replace(".", "").isdigit():
                raise InvalidQuery(f"{keyword}: {value!r} is not a time or time range")
        start, end = start[:6], end[:6].ljust(6, "9") if end else ""
    conditions = [column != ""]
    if start:
        conditions.append(column >= start)
    if end:
        conditions.append(column <= end + ("" if kind is Kind.DATE else "\uffff"))
    return and_(*conditions)


def fuzzy_name(column: Any, value: str) -> Any:
    """Fuzzy matching of a person name (PS3.4 C.2.2.2.1.1 leaves its rules to the implementation): every word of
    the value, without case, accents or wildcards, begins some word of the name, in any component and any order.
    ``hong`` and ``nguyen hong`` find ``Nguyễn^Thị Hồng``. The folded column holds the words separated by spaces;
    ``LIKE 'word%'`` can use an index on it."""
    words = fold_pattern(value).replace("*", " ").replace("?", " ").split()
    if not words:
        return column.isnot(None)
    clauses = []
    for word in words:
        escaped = _like(word)
        clauses.append(or_(column.like(f"{escaped}%", escape="\\"), column.like(f"% {escaped}%", escape="\\")))
    return and_(*clauses)


def condition(attribute: Attribute, value: str, *, fuzzy: bool = False) -> Any:
    kind = attribute.kind
    if kind is Kind.RETURN_ONLY:
        raise InvalidQuery(f"{attribute.keyword} cannot be used for matching")
    if kind is Kind.UID:
        uids = [v.strip() for v in value.split("\\") if v.strip()]
        for uid in uids:
            if not is_valid_uid(uid):
                raise InvalidQuery(f"{attribute.keyword}: {uid!r} is not a valid DICOM UID")
        return attribute.column.in_(uids)
    if kind is Kind.NAME:
        if fuzzy:
            return fuzzy_name(attribute.column, value)
        return _text_condition(attribute.column, fold_pattern(value))
    if kind in (Kind.DATE, Kind.TIME):
        return _range_condition(attribute.column, value, kind, attribute.keyword)
    if kind is Kind.NUMBER:
        try:
            return attribute.column == int(value)
        except ValueError:
            raise InvalidQuery(f"{attribute.keyword}: {value!r} is not a number") from None
    if attribute.keyword == "PatientID":
        other = select(patient_identifiers.c.patient_pk).where(_text_condition(patient_identifiers.c.identifier, value))
        return or_(_text_condition(patients.c.patient_id, value), patients.c.pk.in_(other))
    if kind is Kind.STATUS:
        wanted = [v.strip() for v in value.split("\\") if v.strip()]
        unknown = [v for v in wanted if v not in STUDY_STATUSES]
        if unknown or not wanted:
            raise InvalidQuery(f"{attribute.keyword}: {value!r} is not one of {', '.join(STUDY_STATUSES)} (or a list of them)")
        statuses = [STUDY_STATUSES[v] for v in wanted]
        matched = [reports.c.status.in_([s for s in statuses if s])]
        if None in statuses:
            matched.append(reports.c.status.is_(None))
        return or_(*matched)
    if attribute.keyword == "ModalitiesInStudy":
        wanted = [v for v in value.split("\\") if v]
        return studies.c.pk.in_(select(series.c.study_pk).where(series.c.modality.in_(wanted)))
    return _text_condition(attribute.column, value)


def _patient_counts() -> list[Any]:
    study_count = select(func.count()).select_from(studies).where(studies.c.patient_pk == patients.c.pk)
    series_count = (
        select(func.coalesce(func.sum(studies.c.num_series), 0)).where(studies.c.patient_pk == patients.c.pk)
    )
    instance_count = (
        select(func.coalesce(func.sum(studies.c.num_instances), 0)).where(studies.c.patient_pk == patients.c.pk)
    )
    return [
        study_count.scalar_subquery().label(PATIENT_COUNTS[0]),
        series_count.scalar_subquery().label(PATIENT_COUNTS[1]),
        instance_count.scalar_subquery().label(PATIENT_COUNTS[2]),
    ]


def _statement(query: HierarchyQuery) -> tuple[list[Any], Any, Any]:
    """The columns, joined tables and condition of a query (without order or paging)."""
    depth = query.level.depth
    visible = [a for a in _ATTRIBUTES if a.level.depth <= depth]
    columns = [_DISPLAY_COLUMNS.get(a.keyword, a.column).label(a.keyword) for a in visible]
    source: Any = patients
    conditions: list[Any] = []
    if depth >= Level.STUDY.depth:
        source = source.join(studies, studies.c.patient_pk == patients.c.pk)
        source = source.outerjoin(reports, reports.c.study_uid == studies.c.study_uid)
        conditions.append(studies.c.num_instances > 0)
    if depth >= Level.SERIES.depth:
        source = source.join(series, series.c.study_pk == studies.c.pk)
    if depth >= Level.IMAGE.depth:
        source = source.join(instances, instances.c.series_pk == series.c.pk)
    if depth == Level.PATIENT.depth:
        columns += _patient_counts()
    if depth == Level.IMAGE.depth:
        columns.append(instances.c.object_key.label("ObjectKey"))  # for retrieval
    for keyword, value in query.matches.items():
        attribute = ATTRIBUTES[keyword]
        if attribute.level.depth > depth and keyword != "ModalitiesInStudy":
            continue  # keys below the query level have no meaning here
        if value.strip("*") == "":
            continue  # universal matching
        matched = condition(attribute, value, fuzzy=query.fuzzy_names)
        if keyword == "PatientID" and query.patient_pseudonyms:
            matched = or_(matched, patients.c.patient_id.in_(query.patient_pseudonyms))
        conditions.append(matched)
    if query.scope is not None:
        conditions.append(scope_condition(query.scope, with_studies=depth >= Level.STUDY.depth))
    if query.other_patient_ids:
        other = select(patient_identifiers.c.patient_pk).where(patient_identifiers.c.identifier.in_(query.other_patient_ids))
        conditions.append(patients.c.pk.in_(other))
    return columns, source, and_(*conditions)


_ORDER: dict[Level, list[Any]] = {
    Level.PATIENT: [patients.c.patient_id, patients.c.issuer],
    Level.STUDY: [studies.c.study_date.desc(), studies.c.study_time.desc(), studies.c.study_uid],
    Level.SERIES: [studies.c.study_uid, series.c.series_number, series.c.series_uid],
    Level.IMAGE: [series.c.series_uid, instances.c.instance_number, instances.c.sop_instance_uid],
}


def sortable(level: Level) -> list[str]:
    """The keywords results of a level can be sorted on: its matchable attributes and those above, and the counts."""
    return [
        a.keyword
        for a in _ATTRIBUTES
        if a.level.depth <= level.depth and (a.kind is not Kind.RETURN_ONLY or a.keyword.startswith("NumberOf"))
    ]


def parse_order(level: Level, text: str) -> tuple[tuple[str, bool], ...]:
    """``Keyword[,-Keyword...]`` (a leading ``-`` sorts descending) as sort keys; raises InvalidQuery."""
    allowed = sortable(level)
    order: list[tuple[str, bool]] = []
    for item in (i.strip() for i in text.split(",")):
        descending = item.startswith("-")
        keyword = item[1:].strip() if descending or item.startswith("+") else item
        if keyword not in allowed:
            raise InvalidQuery(
                f"cannot sort {level.value.lower()} results by {keyword!r}; sortable: {', '.join(allowed)}"
            )
        if keyword in (k for k, _ in order):
            raise InvalidQuery(f"{keyword} is given twice in the sort order")
        order.append((keyword, descending))
    return tuple(order)


def _sort_column(keyword: str, descending: bool) -> Any:
    # PatientName and ReferringPhysicianName sort by their folded column: accents and case aside, as people read them.
    column = _study_status_rank if keyword == "StudyStatusID" else ATTRIBUTES[keyword].column
    return column.desc() if descending else column.asc()


def search(conn: Connection, query: HierarchyQuery) -> Iterator[dict[str, Any]]:
    """Rows of the query's level in a stable order, each a dict keyword -> value for that level and above.

    The query's own sort keys come first; the level's usual order breaks their ties, so paging stays stable.
    """
    columns, source, where = _statement(query)
    order = [_sort_column(keyword, descending) for keyword, descending in query.order]
    stmt = select(*columns).select_from(source).where(where).order_by(*order, *_ORDER[query.level])
    if query.limit is not None:
        stmt = stmt.limit(query.limit)
    if query.offset:
        stmt = stmt.offset(query.offset)
    for row in conn.execute(stmt):
        yield dict(row._mapping)


def count(conn: Connection, query: HierarchyQuery) -> int:
    _, source, where = _statement(query)
    return int(conn.execute(select(func.count()).select_from(source).where(where)).scalar_one())
