"""STOW-RS (PS3.18 section 10.5): ``POST /dicom-web/studies[/{study}]``, through the same ingest path as C-STORE.

Each ``application/dicom`` part is validated, put through the
de-identification rules and spooled durably before it is reported stored.
The response lists stored instances (Referenced SOP Sequence, with their
Retrieve URL) and failed ones (Failed SOP Sequence, with the DIMSE status as
Failure Reason): 200 when all were stored, 202 when some were, 409 when none.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.helpers import parse_mimetype
from pydicom import dcmread

from gateway.statuses import StoreStatus
from gateway.http.accept import media_ranges
from gateway.http.dicom_json import DICOM_JSON, element
from gateway.http.dicom_xml import DICOM_XML, native_dicom_model
from gateway.http.errors import http_error
from gateway.http.keys import INGEST
from gateway.http.urls import dicomweb_base
from gateway.ingest.importer import as_part10
from gateway.ingest.instance import InstanceRejected
from gateway.ingest.service import Source
from storage.uids import is_valid_uid

log = logging.getLogger(__name__)

STOW_SOURCE = "STOW-RS"  # the calling AE title the rules see for STOW-RS
# RFC 2046 caps a boundary at 70 characters; Orthanc's DICOMweb client sends 73. Longer ones are accepted.
MAX_BOUNDARY = 256


class _Reader(MultipartReader):
    """aiohttp's multipart reader, taking the boundaries real clients send (checked by :func:`_boundary`)."""

    def _get_boundary(self) -> str:
        return str(self._mimetype.parameters["boundary"])


def _boundary(content_type: str) -> None:
    """Refuse a Content-Type STOW-RS cannot read, saying exactly what is wrong with it."""
    mimetype = parse_mimetype(content_type)
    if (mimetype.type, mimetype.subtype) != ("multipart", "related"):
        got = f"{mimetype.type}/{mimetype.subtype}" if mimetype.type else "no Content-Type"
        raise http_error(web.HTTPUnsupportedMediaType, f'send multipart/related; type="application/dicom" (got {got})')
    part_type = mimetype.parameters.get("type", "application/dicom").strip().lower()
    if part_type != "application/dicom":
        raise http_error(web.HTTPUnsupportedMediaType, f'only type="application/dicom" parts are accepted (got type="{part_type}")')
    boundary = mimetype.parameters.get("boundary")
    if boundary is None:
        raise http_error(web.HTTPBadRequest, "the multipart/related Content-Type has no boundary parameter")
    if not 1 <= len(boundary) <= MAX_BOUNDARY:
        raise http_error(web.HTTPBadRequest, f"the boundary must be 1 to {MAX_BOUNDARY} characters (got {len(boundary)})")


def _response_type(request: web.Request) -> str:
    for accepted in media_ranges(request.headers.get("Accept"), default=DICOM_JSON):
        if accepted.media_type in (DICOM_JSON, "application/json", "application/*", "*/*"):
            return DICOM_JSON
        if accepted.media_type == DICOM_XML:
            return DICOM_XML
    raise http_error(web.HTTPNotAcceptable, f"the STOW-RS response is offered as {DICOM_JSON} or {DICOM_XML}")


def _uids(data: bytes) -> tuple[str, str, str]:
    """Study, SOP Class and SOP Instance UIDs of a part, without reading its pixel data."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["StudyInstanceUID", "SOPClassUID", "SOPInstanceUID"])
        return str(ds.get("StudyInstanceUID", "")), str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))
    except Exception:  # not DICOM; the ingest path says why
        return "", "", ""


def _failure(sop_class: str, sop_instance: str, status: int) -> dict[str, Any]:
    return {
        "00081150": element("UI", sop_class),
        "00081155": element("UI", sop_instance),
        "00081197": element("US", status),
    }


async def store_instances(request: web.Request) -> web.Response:
    study = request.match_info.get("study")
    if study is not None and not is_valid_uid(study):
        raise http_error(web.HTTPBadRequest, f"{study!r} is not a valid DICOM UID")
    response_type = _response_type(request)  # before anything is stored
    _boundary(request.headers.get("Content-Type", ""))
    reader = _Reader(request.headers, request.content)
    ingest = request.app[INGEST]
    peer = request.remote or ""
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    base = dicomweb_base(request)
    stored_study = study
    while True:
        try:
            part = await reader.next()
        except ValueError as exc:
            raise http_error(web.HTTPBadRequest, _malformed(exc, stored, failed)) from None
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise http_error(web.HTTPBadRequest, "nested multipart bodies are not accepted")
        part_type = part.headers.get("Content-Type", "application/dicom").split(";")[0].strip().lower()
        try:
            data = bytes(await part.read())
        except ValueError as exc:
            raise http_error(web.HTTPBadRequest, _malformed(exc, stored, failed)) from None
        part_study, sop_class, sop_instance = _uids(data)
        if part_type != "application/dicom":
            failed.append(_failure(sop_class, sop_instance, StoreStatus.CANNOT_UNDERSTAND))
            continue
        try:
            data = as_part10(data)
        except InstanceRejected as rejected:
            failed.append(_failure(sop_class, sop_instance, rejected.status))
            continue
        if study is not None and part_study != study:
            failed.append(_failure(sop_class, sop_instance, StoreStatus.DATASET_MISMATCH))
            continue
        outcome = await ingest.accept(data, Source("stow", STOW_SOURCE, peer))
        if not outcome.stored or outcome.record is None:
            failed.append(_failure(sop_class, sop_instance, outcome.status))
            continue
        record = outcome.record
        stored_study = stored_study or record.study_uid
        url = f"{base}/studies/{record.study_uid}/series/{record.series_uid}/instances/{record.sop_instance_uid}"
        stored.append(
            {"00081150": element("UI", record.sop_class_uid), "00081155": element("UI", record.sop_instance_uid), "00081190": element("UR", url)}
        )
    if not stored and not failed:
        raise http_error(web.HTTPBadRequest, "the request holds no instance")
    body: dict[str, Any] = {}
    if stored_study:
        body["00081190"] = element("UR", f"{base}/studies/{stored_study}")
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else (202 if stored else 409)
    log.info("STOW-RS from %s: %d stored, %d failed", peer, len(stored), len(failed))
    if response_type == DICOM_XML:
        return web.Response(status=status, body=native_dicom_model(body), headers={"Content-Type": DICOM_XML})
    # No charset parameter: JSON is UTF-8, and some clients compare the media type exactly.
    return web.Response(status=status, body=json.dumps(body).encode(), headers={"Content-Type": DICOM_JSON})


def _malformed(exc: ValueError, stored: list[Any], failed: list[Any]) -> str:
    """Why a multipart body cannot be read, and what of it was already stored (those stay stored)."""
    text = str(exc)
    if "starting boundary" in text:
        reason = "the body does not begin with the boundary given in the Content-Type"
    elif not text or "EOF" in text:
        reason = "the body ends before its closing boundary (truncated upload?)"
    elif "header" in text.lower():
        reason = f"a part's headers are malformed ({text[:120]})"
    else:
        reason = f"malformed multipart body ({text[:120]})"
    if stored or failed:
        reason += f"; {len(stored)} instance(s) before it were stored, {len(failed)} failed"
    return reason


def add_routes(app: web.Application) -> None:
    app.router.add_post("/dicom-web/studies", store_instances)
    app.router.add_post("/dicom-web/studies/{study}", store_instances)
