"""QIDO-RS (PS3.18 section 10.6): studies, series and instances, at every route PS3.18 defines.

Matching is the C-FIND matching (``storage.index.hierarchy``): the same
wildcards, ranges, UID lists, accent-insensitive names and other patient
IDs, so the two protocols answer alike. ``fuzzymatching=true`` matches
person names by the start of any of their words (``hierarchy.fuzzy_name``). ``orderby`` (a gateway extension)
sorts on attributes of the level before ``limit`` and ``offset`` apply.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from gateway.http.access import Permission, route
from gateway.http.accept import dicom_documents_type
from gateway.http.dicom_json import DICOM_JSON, element, json_response
from gateway.http.dicom_xml import DICOM_XML, native_dicom_model
from gateway.http.errors import http_error
from gateway.http.auth import USER, scope_of
from gateway.http.keys import QUERIES
from gateway.http.parts import Multipart
from gateway.http.urls import dicomweb_base
from storage.index.hierarchy import HierarchyQuery, Level, parse_order
from storage.index.matching import InvalidQuery
from storage.index.qido_query import check_value, keywords_at, matching_key


_CONTROL = {"limit", "offset", "includefield", "fuzzymatching", "orderby"}
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

# Attributes returned at each level (PS3.18 Tables 6.7.1-2, -2a, -2b, as far as the index keeps them).
RETURNED = {
    Level.STUDY: (
        "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName", "StudyDescription",
        "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
        "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "StudyStatusID",
    ),
    Level.SERIES: (
        "Modality", "SeriesDescription", "BodyPartExamined", "SeriesInstanceUID", "SeriesNumber",
        "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "NumberOfSeriesRelatedInstances",
        "StudyInstanceUID",
    ),
    Level.IMAGE: (
        "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames",
        "StudyInstanceUID", "SeriesInstanceUID",
    ),
}  # fmt: skip


def _keyword(name: str) -> str | None:
    """A query parameter names an attribute by keyword or by its tag as 8 hex digits."""
    if tag_for_keyword(name) is not None:
        return name
    if len(name) == 8:
        try:
            return keyword_for_tag(int(name, 16)) or None
        except ValueError:
            return None
    return None


def _int_param(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise InvalidQuery(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise InvalidQuery(f"{name} must be between {low} and {high}")
    return value


def parse_query(params: Any, level: Level, fixed: dict[str, str]) -> tuple[HierarchyQuery, set[str]]:
    """The hierarchy query and the extra attributes asked for with ``includefield``."""
    matches = dict(fixed)
    include: set[str] = set()
    limit, offset = DEFAULT_LIMIT, 0
    order: tuple[tuple[str, bool], ...] = ()
    fuzzy = False
    for name in set(params):
        values = params.getall(name)
        if name in _CONTROL:
            if name != "includefield" and len(values) > 1:
                raise InvalidQuery(f"{name} given more than once")
            if name == "limit":
                limit = _int_param("limit", values[0], 1, MAX_LIMIT)
            elif name == "offset":
                offset = _int_param("offset", values[0], 0, 10**9)
            elif name == "orderby":
                order = parse_order(level, values[0])
            elif name == "fuzzymatching":
                if values[0] not in {"true", "false"}:
                    raise InvalidQuery("fuzzymatching must be true or false")
                fuzzy = values[0] == "true"  # without it names still match without case or accents
            elif name == "includefield":
                for item in (i.strip() for value in values for i in value.split(",")):
                    keyword = "all" if item == "all" else _keyword(item)
                    if keyword is None:
                        raise InvalidQuery(f"includefield: unknown attribute {item!r}")
                    include.add(keyword)
            continue
        keyword = _keyword(name)
        if keyword is None:
            raise InvalidQuery(f"unknown query parameter {name!r}")
        key = matching_key(keyword)
        if key is None or (key.level.depth > level.depth and keyword != "ModalitiesInStudy"):
            raise InvalidQuery(f"{keyword} is not a supported matching key at {level.value.lower()} level")
        if len(values) > 1:
            raise InvalidQuery(f"{keyword} given more than once")
        value = values[0].strip().replace(",", "\\") if key.listed else values[0].strip()
        if keyword in fixed and value and value != fixed[keyword]:
            raise InvalidQuery(f"{keyword} contradicts the path")
        if value:
            check_value(keyword, value)  # refuse a bad value now, with its reason
            matches[keyword] = value
    return HierarchyQuery(level, matches, limit=limit, offset=offset, order=order, fuzzy_names=fuzzy), include


def _retrieve_url(request: web.Request, row: dict[str, Any], level: Level) -> str:
    url = f"{dicomweb_base(request)}/studies/{row['StudyInstanceUID']}"
    if level.depth >= Level.SERIES.depth:
        url += f"/series/{row['SeriesInstanceUID']}"
    if level is Level.IMAGE:
        url += f"/instances/{row['SOPInstanceUID']}"
    return url


def attributes(row: dict[str, Any], level: Level, include: set[str], retrieve_url: str) -> dict[str, Any]:
    keywords = set(RETURNED[level])
    if "all" in include:
        keywords |= {k for k in keywords_at(level) if k in row}
    keywords |= {k for k in include if k in row}
    out = {}
    for keyword in keywords:
        value = row.get(keyword)
        if keyword == "ModalitiesInStudy":
            value = [m for m in str(value or "").split("\\") if m]
        out[f"{tag_for_keyword(keyword):08X}"] = element(dictionary_VR(keyword), value)
    out["00081190"] = element("UR", retrieve_url)
    return dict(sorted(out.items()))


def _route(level: Level) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        response_type = dicom_documents_type(request, "QIDO-RS")
        fixed = {}
        if "study" in request.match_info:
            fixed["StudyInstanceUID"] = request.match_info["study"]
        if "series" in request.match_info:
            fixed["SeriesInstanceUID"] = request.match_info["series"]
        try:
            for keyword, uid in fixed.items():
                check_value(keyword, uid)
            query, include = parse_query(request.query, level, fixed)
        except InvalidQuery as exc:
            raise http_error(web.HTTPBadRequest, str(exc)) from None
        found = await request.app[QUERIES].search(query, user=request[USER], scope=scope_of(request))
        rows, total = found.rows, found.total
        headers = {"X-Total-Count": str(total)}
        remaining = total - query.offset - len(rows)
        if remaining > 0:
            headers["Warning"] = f'299 pacs-gateway: "There are {remaining} additional results that can be requested"'
        body = [attributes(row, level, include, _retrieve_url(request, row, level)) for row in rows]
        if response_type == DICOM_JSON:
            return json_response(request, body, headers)
        multipart = Multipart(request, DICOM_XML)
        await multipart.start(headers)
        for document in body:
            await multipart.part(await asyncio.to_thread(native_dicom_model, document), part_type=f"{DICOM_XML}; charset=utf-8")
        return await multipart.finish()

    return handler


def add_routes(app: web.Application) -> None:
    base = "/dicom-web"
    for path, level in (
        (f"{base}/studies", Level.STUDY),
        (f"{base}/series", Level.SERIES),
        (f"{base}/studies/{{study}}/series", Level.SERIES),
        (f"{base}/instances", Level.IMAGE),
        (f"{base}/studies/{{study}}/instances", Level.IMAGE),
        (f"{base}/studies/{{study}}/series/{{series}}/instances", Level.IMAGE),
    ):
        route(app, "GET", path, _route(level), permission=Permission.QUERY, audit="query")
