"""WADO-RS (PS3.18 section 10.4): instances, metadata, frames and bulk data of studies, series and instances.

Metadata comes from the index (kept at ingest), so a study's metadata is one
query, whatever the object store. Instances are streamed one by one as
multipart/related parts, in their stored transfer syntax when the client
accepts any (``transfer-syntax=*``), else decoded to Explicit VR Little
Endian, the PS3.18 default.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydicom import dcmread
from pydicom.dataset import Dataset

from gateway.dimse.transcode import ConversionError, part10_in
from gateway.http.access import Permission, route
from gateway.http.accept import dicom_documents_type, media_ranges
from gateway.http.auth import scope_of
from gateway.http.dicom_json import DICOM_JSON, json_response
from gateway.http.dicom_xml import DICOM_XML, native_dicom_model
from gateway.http.errors import http_error
from gateway.http.keys import INDEX, LOCATIONS, OBJECT_STORE
from gateway.http.parts import Multipart, prepare, warning
from gateway.http.urls import dicomweb_base
from gateway.ingest.metadata import metadata_dict
from storage.index.hierarchy import HierarchyQuery, Level
from storage.object_store.base import ObjectStoreError
from storage.uids import is_valid_uid

log = logging.getLogger(__name__)

EXPLICIT_LE = "1.2.840.10008.1.2.1"


@dataclass(frozen=True)
class Wanted:
    media_type: str
    transfer_syntax: str  # "*" for as stored


def negotiate(request: web.Request, part_type: str) -> Wanted:
    """What the Accept header allows for parts of ``part_type`` (application/dicom or application/octet-stream)."""
    for accepted in media_ranges(request.headers.get("Accept")):
        media, params = accepted.media_type, accepted.params
        if media in ("*/*", "multipart/*") or (media == "multipart/related" and params.get("type", part_type) in (part_type, "*/*")):
            syntax = params.get("transfer-syntax", EXPLICIT_LE if part_type == "application/dicom" else "*")
            if syntax in ("*", EXPLICIT_LE):
                return Wanted(part_type, syntax)
    raise http_error(
        web.HTTPNotAcceptable,
        f'offered: multipart/related; type="{part_type}" with transfer-syntax=* or {EXPLICIT_LE}',
    )


def _uids(request: web.Request) -> tuple[str, str | None, str | None]:
    info = request.match_info
    uids = (info["study"], info.get("series"), info.get("instance"))
    for uid in uids:
        if uid is not None and not is_valid_uid(uid):
            raise http_error(web.HTTPBadRequest, f"{uid!r} is not a valid DICOM UID")
    return uids


async def documents(request: web.Request, *, with_metadata: bool = True) -> list[dict[str, Any]]:
    return await documents_for(request, *_uids(request), with_metadata=with_metadata)


async def documents_for(
    request: web.Request, study: str, series: str | None, instance: str | None, *, with_metadata: bool = True
) -> list[dict[str, Any]]:
    index = request.app[INDEX]
    scope = scope_of(request)
    if scope is not None:  # a referring physician: only studies of their patients, or granted (else "not found")
        visible = HierarchyQuery(Level.STUDY, {"StudyInstanceUID": study}, scope=scope)
        if not await asyncio.to_thread(index.count_hierarchy, visible):
            raise http_error(web.HTTPNotFound, "no such study, series or instance")
    rows = await asyncio.to_thread(index.instance_documents, study, series, instance, with_metadata=with_metadata)
    if not rows:
        raise http_error(web.HTTPNotFound, "no such study, series or instance")
    return rows


def _link_bulk(value: Any, url: str) -> None:
    """Turn the tag markers kept at ingest into bulkdata URLs, at every depth."""
    for key, element in value.items():
        if "BulkDataURI" in element:
            element["BulkDataURI"] = f"{url}/bulkdata/{key}"
        for item in element.get("Value", ()) if element.get("vr") == "SQ" else ():
            _link_bulk(item, url)


async def read_object(request: web.Request, object_key: str, version: str = "") -> bytes:
    """The stored object; ``version``, the checksum the index names, lets the read cache serve it."""
    try:
        return await asyncio.to_thread(functools.partial(request.app[OBJECT_STORE].get, object_key, version=version))
    except ObjectStoreError as exc:
        raise http_error(web.HTTPServiceUnavailable, f"object store unavailable: {exc}") from None


def load_dataset(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(io.BytesIO(data))


async def metadata(request: web.Request) -> web.StreamResponse:
    wanted = dicom_documents_type(request, "metadata")
    rows = await documents(request)
    out = []
    for row in rows:
        if row["metadata"] is None:  # stored before metadata was kept: made from the object once
            document = metadata_dict(await asyncio.to_thread(load_dataset, await read_object(request, row["object_key"], row.get("checksum") or "")))
        else:
            document = json.loads(row["metadata"])
        url = f"{dicomweb_base(request)}/studies/{row['study_uid']}/series/{row['series_uid']}/instances/{row['sop_instance_uid']}"
        _link_bulk(document, url)
        out.append(document)
    if wanted == DICOM_JSON:
        return json_response(request, out)
    multipart = Multipart(request, DICOM_XML)
    await multipart.start()
    for document in out:
        await multipart.part(await asyncio.to_thread(native_dicom_model, document), part_type=f"{DICOM_XML}; charset=utf-8")
    return await multipart.finish()


def _as_stored_hint(syntax: str) -> str:
    return f"cannot be sent as {syntax}; ask with transfer-syntax=* to have it as stored"


async def instances(request: web.Request) -> web.StreamResponse:
    """Instances of a study, series or one instance. Those that need decoding to the syntax asked for are
    decoded before the answer starts: one that cannot be is left out and named in a Warning header, and when
    none can be sent the answer is 406, never a 200 with nothing in it."""
    wanted = negotiate(request, "application/dicom")
    rows = await documents(request, with_metadata=False)
    syntax = wanted.transfer_syntax
    to_convert = [r for r in rows if syntax not in ("*", r["transfer_syntax_uid"])]
    converting = {r["sop_instance_uid"] for r in to_convert}

    async def convert(row: dict[str, Any]) -> tuple[bytes, Any]:
        stored = await read_object(request, row["object_key"], row.get("checksum") or "")
        try:
            body, made_in = await asyncio.to_thread(
                part10_in, stored, row["transfer_syntax_uid"], syntax, row["sop_class_uid"], row["sop_instance_uid"]
            )
            return body, (row["sop_instance_uid"], made_in)
        except ConversionError as exc:
            log.warning("WADO-RS: instance %s not sent: %s", row["sop_instance_uid"], exc)
            raise ConversionError(f"instance {row['sop_instance_uid']}: {exc}") from None

    converted = await prepare(to_convert, convert, ConversionError)
    try:
        if converted.failures and len(converted.failures) == len(rows):
            if len(rows) == 1:
                raise http_error(web.HTTPNotAcceptable, f"{converted.failures[0]}; the instance {_as_stored_hint(syntax)}")
            raise http_error(web.HTTPNotAcceptable, f"none of the {len(rows)} instances {_as_stored_hint(syntax)}")
        headers = {}
        if converted.failures:
            headers["Warning"] = warning(
                request, f"{len(converted.failures)} of {len(rows)} instances left out: they {_as_stored_hint(syntax)}"
            )
        multipart = Multipart(request, "application/dicom", syntax)
        await multipart.start(headers)
        ready = aiter(converted)
        made = {uid for (uid, _), _, _ in converted.places}
        for row in rows:
            if row["sop_instance_uid"] in converting:
                if row["sop_instance_uid"] not in made:
                    continue
                body, (_, part_syntax) = await anext(ready)
            else:
                body, part_syntax = await read_object(request, row["object_key"], row.get("checksum") or ""), row["transfer_syntax_uid"]
            await multipart.part(body, transfer_syntax=part_syntax)
        return await multipart.finish()
    finally:
        converted.close()


def _frame_numbers(text: str) -> list[int]:
    try:
        numbers = [int(n) for n in text.split(",")]
    except ValueError:
        raise http_error(web.HTTPBadRequest, "frame list must be numbers separated by commas") from None
    if not numbers or min(numbers) < 1:
        raise http_error(web.HTTPBadRequest, "frame numbers start at 1")
    return numbers


class NoSuchFrame(LookupError):
    pass


def _frames(stored: bytes, numbers: list[int]) -> list[bytes]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(io.BytesIO(stored), defer_size=4096)  # pixel data left unread: sliced from the bytes below
    count = int(ds.get("NumberOfFrames") or 1)
    if max(numbers) > count:
        raise NoSuchFrame(f"the instance has {count} frame(s)")
    syntax = ds.file_meta.TransferSyntaxUID
    raw = ds.get_item(0x7FE00010, keep_deferred=True)
    if not syntax.is_encapsulated and syntax.is_little_endian and raw is not None and getattr(raw, "value", b"") is None:
        size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
        start = int(getattr(raw, "value_tell"))  # a deferred value is a RawDataElement
        return [stored[start + (n - 1) * size : start + n * size] for n in numbers]
    from pydicom.pixels import pixel_array

    return [pixel_array(ds, index=n - 1).tobytes() if count > 1 else ds.pixel_array.tobytes() for n in numbers]


async def _instance_row(request: web.Request) -> dict[str, Any]:
    """The one instance's location row: from the series kept in memory while the index is unchanged
    (storage.index.instance_locations), else one query for the whole series, as a viewer reads it frame by frame."""
    study, series, instance = _uids(request)
    if scope_of(request) is not None or series is None or instance is None:
        [row] = await documents_for(request, study, series, instance, with_metadata=False)
        return row
    locations = request.app[LOCATIONS]
    rows = locations.cached(study, series)
    if rows is None:
        rows = await asyncio.to_thread(locations.load, study, series)
    found = rows.get(instance)
    if found is None:
        raise http_error(web.HTTPNotFound, "no such study, series or instance")
    return found


async def frames(request: web.Request) -> web.StreamResponse:
    negotiate(request, "application/octet-stream")
    numbers = _frame_numbers(request.match_info["frames"])
    row = await _instance_row(request)
    if row["data_offset"] is not None and row["frame_length"]:  # uncompressed: read just the frames asked for
        count = int(row["number_of_frames"] or 1)
        if max(numbers) > count:
            raise http_error(web.HTTPNotFound, f"the instance has {count} frame(s)")
        store, size, version = request.app[OBJECT_STORE], int(row["frame_length"]), row.get("checksum") or ""
        cached = getattr(store, "cached_range", None)  # a read cache answers from memory, without a thread
        try:
            parts: list[bytes | bytearray] = []
            for n in numbers:
                offset = int(row["data_offset"]) + (n - 1) * size
                part: bytes | bytearray | None = cached(row["object_key"], offset, size, version) if cached is not None else None
                if part is None:
                    part = await asyncio.to_thread(functools.partial(store.get_range, row["object_key"], offset, size, version=version))
                parts.append(part)
        except ObjectStoreError as exc:
            raise http_error(web.HTTPServiceUnavailable, f"object store unavailable: {exc}") from None
        return await _send_parts(request, parts)
    stored = await read_object(request, row["object_key"], row.get("checksum") or "")
    try:
        decoded = await asyncio.to_thread(_frames, stored, numbers)
    except NoSuchFrame as exc:
        raise http_error(web.HTTPNotFound, str(exc)) from None
    except Exception as exc:  # each codec raises its own kind
        log.warning("WADO-RS: frames of %s not decoded: %s", row["sop_instance_uid"], type(exc).__name__)
        raise http_error(web.HTTPNotAcceptable, _undecodable(row)) from None
    return await _send_parts(request, decoded)


def _undecodable(row: dict[str, Any]) -> str:
    return (
        f"the pixel data of this instance ({row['transfer_syntax_uid']}) cannot be decoded here; "
        "the instance itself can be retrieved as stored with transfer-syntax=*"
    )


_JOIN_LIMIT = 8 * 1024 * 1024  # frames up to this size are sent as one joined body; above it, written one by one


async def _send_parts(request: web.Request, parts: Sequence[bytes | bytearray]) -> web.StreamResponse:
    """Frames already in memory: one body joined once (one copy, no chunked writes); above ``_JOIN_LIMIT``
    (a large cine) written part by part, so the frames are not held twice. Both with a Content-Length."""
    boundary = uuid.uuid4().hex
    head = f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
    pieces: list[bytes | bytearray] = []
    for part in parts:
        pieces += (head, part, b"\r\n")
    pieces.append(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; type="application/octet-stream"; boundary={boundary}'
    total = sum(len(piece) for piece in pieces)
    if total <= _JOIN_LIMIT:
        return web.Response(body=b"".join(pieces), headers={"Content-Type": content_type})
    response = web.StreamResponse(headers={"Content-Type": content_type})
    response.content_length = total
    await response.prepare(request)
    for piece in pieces:
        await response.write(piece)
    await response.write_eof()
    return response


async def bulkdata(request: web.Request) -> web.StreamResponse:
    negotiate(request, "application/octet-stream")
    [row] = await documents(request, with_metadata=False)
    try:
        tag = int(request.match_info["tag"], 16)
    except ValueError:
        raise http_error(web.HTTPBadRequest, "bulk data is named by its tag, 8 hex digits") from None
    ds = await asyncio.to_thread(load_dataset, await read_object(request, row["object_key"], row.get("checksum") or ""))
    if tag not in ds:
        raise http_error(web.HTTPNotFound, "the instance has no such attribute")
    if tag == 0x7FE00010 and ds.file_meta.TransferSyntaxUID.is_encapsulated:
        try:
            value = await asyncio.to_thread(lambda: ds.pixel_array.tobytes())
        except Exception as exc:  # each codec raises its own kind
            log.warning("WADO-RS: pixel data of %s not decoded: %s", row["sop_instance_uid"], type(exc).__name__)
            raise http_error(web.HTTPNotAcceptable, _undecodable(row)) from None
    else:
        value = ds[tag].value
    if not isinstance(value, (bytes, bytearray)):
        raise http_error(web.HTTPNotFound, "that attribute is not bulk data")
    multipart = Multipart(request, "application/octet-stream")
    await multipart.start()
    await multipart.part(bytes(value))
    return await multipart.finish()


def add_routes(app: web.Application) -> None:
    base = "/dicom-web/studies/{study}"
    for path in (base, f"{base}/series/{{series}}", f"{base}/series/{{series}}/instances/{{instance}}"):
        route(app, "GET", path, instances, permission=Permission.RETRIEVE, audit="retrieve")
        route(app, "GET", f"{path}/metadata", metadata, permission=Permission.VIEW, audit="retrieve")
    instance = f"{base}/series/{{series}}/instances/{{instance}}"
    route(app, "GET", f"{instance}/frames/{{frames}}", frames, permission=Permission.VIEW, audit="retrieve")
    route(app, "GET", f"{instance}/bulkdata/{{tag}}", bulkdata, permission=Permission.RETRIEVE, audit="retrieve")
