"""Rendered images and thumbnails: WADO-RS ``/rendered`` and ``/thumbnail`` (PS3.18 10.4.1.1.3, 10.4.1.1.4), and WADO-URI.

Query parameters: ``window=center,width[,function]``, ``viewport=columns,rows``,
``quality=1..100``; ``Accept: image/jpeg`` (default) or ``image/png``. An
instance or frame renders to one image; a study or series to a
multipart/related of one image per instance (its first frame), those that
cannot be rendered left out and named in a ``Warning`` header. Each instance is
read and rendered in a worker thread, never on the event loop; a study or
series of more than ``http.max_rendered_instances`` answers 413 (PS3.18 allows
413 for a response too large), so that one request cannot have thousands of
images rendered before its first byte.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from gateway.dimse.transcode import ConversionError
from gateway.http.access import Permission, route
from gateway.http.accept import media_ranges
from gateway.http.errors import http_error
from gateway.dimse.transcode import part10_in
from gateway.http.keys import SETTINGS
from gateway.http.parts import Multipart, prepare, warning
from gateway.http.rendering import JPEG, PNG, RenderError, RenderRequest, render
from gateway.http.wado import EXPLICIT_LE, documents, documents_for, load_dataset, read_object
from storage.uids import is_valid_uid

log = logging.getLogger(__name__)

THUMBNAIL = (128, 128)


def _media_type(request: web.Request) -> str:
    """image/jpeg or image/png, as the Accept header prefers (a multipart/related range names it in ``type``)."""
    for accepted in media_ranges(request.headers.get("Accept")):
        media = accepted.media_type
        if media in ("multipart/related", "multipart/*"):
            media = accepted.params.get("type", "image/*").lower()
        if media in ("*/*", "image/*", JPEG):
            return JPEG
        if media == PNG:
            return PNG
    raise http_error(web.HTTPNotAcceptable, "rendered images are offered as image/jpeg or image/png")


def _numbers(text: str, what: str, count: int) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")[:count]]
    except ValueError:
        raise http_error(web.HTTPBadRequest, f"{what} must be numbers separated by commas") from None
    if len(values) < count:
        raise http_error(web.HTTPBadRequest, f"{what} needs {count} numbers")
    return values


def parse_render_request(request: web.Request, *, frame: int = 1, thumbnail: bool = False) -> RenderRequest:
    query = request.query
    window = None
    if "window" in query:
        center, width = _numbers(query["window"], "window", 2)
        if width <= 0:
            raise http_error(web.HTTPBadRequest, "window width must be positive")
        window = (center, width)
    viewport = THUMBNAIL if thumbnail else None
    if "viewport" in query:
        columns, rows = _numbers(query["viewport"], "viewport", 2)
        if not (0 < columns <= 8192 and 0 < rows <= 8192):
            raise http_error(web.HTTPBadRequest, "viewport must be between 1 and 8192 pixels")
        viewport = (int(columns), int(rows))
    quality = 90
    if "quality" in query:
        [value] = _numbers(query["quality"], "quality", 1)
        if not 1 <= value <= 100:
            raise http_error(web.HTTPBadRequest, "quality must be between 1 and 100")
        quality = int(value)
    return RenderRequest(frame, window, viewport, _media_type(request), quality)


class _NotRendered(Exception):
    """An instance that cannot be rendered: no such frame, no pixel data, or (_Undecodable) a damaged object or
    pixel data that cannot be decoded."""


class _Undecodable(_NotRendered):
    pass


def _render_stored(stored: bytes, wanted: RenderRequest, sop_instance_uid: str) -> bytes:
    """Read a stored object and render it (in a worker thread: both decode the whole object)."""
    try:
        return render(load_dataset(stored), wanted)
    except RenderError as exc:
        raise _NotRendered(str(exc)) from None
    except Exception as exc:  # a damaged object, or a codec that cannot decode its pixel data: each raises its own kind
        log.warning("rendered: instance %s not rendered: %s", sop_instance_uid, type(exc).__name__)
        raise _Undecodable("the object cannot be read or its pixel data cannot be decoded") from None


async def _render(request: web.Request, row: dict[str, Any], wanted: RenderRequest) -> bytes:
    stored = await read_object(request, row["object_key"], row.get("checksum") or "")
    return await asyncio.to_thread(_render_stored, stored, wanted, row["sop_instance_uid"])


async def render_row(request: web.Request, row: dict[str, Any], wanted: RenderRequest) -> web.Response:
    try:
        image = await _render(request, row, wanted)
    except _Undecodable as exc:
        raise http_error(web.HTTPNotAcceptable, f"this instance cannot be rendered: {exc}") from None
    except _NotRendered as exc:
        raise http_error(web.HTTPNotFound, str(exc)) from None
    return web.Response(body=image, content_type=wanted.media_type)  # not cached: see app.response_headers


async def rendered(request: web.Request) -> web.Response:
    frame = 1
    if "frame" in request.match_info:
        try:
            frame = int(request.match_info["frame"])
        except ValueError:
            raise http_error(web.HTTPBadRequest, "a frame number is a whole number") from None
    wanted = parse_render_request(request, frame=frame)
    [row] = await documents(request, with_metadata=False)
    return await render_row(request, row, wanted)


async def rendered_many(request: web.Request) -> web.StreamResponse:
    """A study or series rendered: one image per instance, in the order of the series and instance numbers."""
    wanted = parse_render_request(request)
    rows = await documents(request, with_metadata=False)
    most = request.app[SETTINGS].http.max_rendered_instances
    if len(rows) > most:
        what = "series" if "series" in request.match_info else "study"
        reason = (
            f"this {what} has {len(rows)} instances and at most {most} are rendered in one answer "
            f"(http.max_rendered_instances): ask for {'its series or ' if what == 'study' else ''}its instances one by one"
        )
        raise web.HTTPRequestEntityTooLarge(most, len(rows), text=json.dumps({"error": reason}), content_type="application/json")

    async def make(row: dict[str, Any]) -> tuple[bytes, Any]:
        try:
            return await _render(request, row, wanted), None
        except _NotRendered as exc:
            raise _NotRendered(f"instance {row['sop_instance_uid']}: {exc}") from None

    images = await prepare(rows, make, _NotRendered)
    try:
        if not images.places:
            reason = images.failures[0] if len(rows) == 1 else f"none of the {len(rows)} instances can be rendered"
            raise http_error(web.HTTPNotAcceptable, reason)
        headers = {}
        if images.failures:
            headers["Warning"] = warning(request, f"{len(images.failures)} of {len(rows)} instances cannot be rendered and are left out")
        multipart = Multipart(request, wanted.media_type)
        await multipart.start(headers)
        async for image, _ in images:
            await multipart.part(image)
        return await multipart.finish()
    finally:
        images.close()


async def thumbnail(request: web.Request) -> web.Response:
    wanted = parse_render_request(request, thumbnail=True)
    rows = await documents(request, with_metadata=False)
    if "instance" not in request.match_info:  # a series or study: its middle image
        series_uid = rows[0]["series_uid"]
        rows = [r for r in rows if r["series_uid"] == series_uid]
    return await render_row(request, rows[len(rows) // 2], wanted)


async def wado_uri(request: web.Request) -> web.Response:
    """WADO-URI (PS3.18 section 9): one object, as DICOM or rendered, for legacy clients."""
    query = request.query
    if query.get("requestType") != "WADO":
        raise http_error(web.HTTPBadRequest, "requestType must be WADO")
    uids = [query.get(name, "") for name in ("studyUID", "seriesUID", "objectUID")]
    for uid in uids:
        if not is_valid_uid(uid):
            raise http_error(web.HTTPBadRequest, "studyUID, seriesUID and objectUID must be valid DICOM UIDs")
    [row] = await documents_for(request, *uids, with_metadata=False)
    content_type = query.get("contentType", JPEG).split(",")[0].strip()
    if content_type == "application/dicom":
        syntax = query.get("transferSyntax", EXPLICIT_LE)
        stored = await read_object(request, row["object_key"], row.get("checksum") or "")
        try:
            body, _ = await asyncio.to_thread(
                part10_in, stored, row["transfer_syntax_uid"], syntax, row["sop_class_uid"], row["sop_instance_uid"]
            )
        except ConversionError as exc:
            raise http_error(
                web.HTTPNotAcceptable, f"this object cannot be sent as {syntax}: {exc}; transferSyntax=* gives it as stored"
            ) from None
        return web.Response(body=body, content_type="application/dicom")
    if content_type not in (JPEG, PNG):
        raise http_error(web.HTTPNotAcceptable, "contentType must be application/dicom, image/jpeg or image/png")
    try:
        frame = int(query.get("frameNumber", "1"))
        window = (float(query["windowCenter"]), float(query["windowWidth"])) if "windowCenter" in query else None
        viewport = (int(query.get("columns") or query.get("rows") or 0), int(query.get("rows") or query.get("columns") or 0))
        quality = int(query.get("imageQuality", "90"))
    except (ValueError, KeyError):
        raise http_error(web.HTTPBadRequest, "frameNumber, windowCenter/windowWidth, rows, columns and imageQuality are numbers") from None
    wanted = RenderRequest(frame, window, viewport if viewport[0] > 0 else None, content_type, max(1, min(quality, 100)))
    return await render_row(request, row, wanted)


def add_routes(app: web.Application) -> None:
    route(app, "GET", "/wado", wado_uri, permission=Permission.RETRIEVE, audit="retrieve")
    study = "/dicom-web/studies/{study}"
    instance = f"{study}/series/{{series}}/instances/{{instance}}"
    views = [(f"{instance}/rendered", rendered), (f"{instance}/frames/{{frame}}/rendered", rendered),
             (f"{study}/rendered", rendered_many), (f"{study}/series/{{series}}/rendered", rendered_many)]  # fmt: skip
    views += [(f"{path}/thumbnail", thumbnail) for path in (study, f"{study}/series/{{series}}", instance)]
    for path, handler in views:
        route(app, "GET", path, handler, permission=Permission.VIEW, audit="retrieve")
