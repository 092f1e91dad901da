"""DICOM JSON (PS3.18 Annex F) for the attributes the index returns."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

DICOM_JSON = "application/dicom+json"


def element(vr: str, value: Any) -> dict[str, Any]:
    """One attribute; an empty value gives the attribute with no Value, as PS3.18 F.2.5 asks."""
    if value is None or value == "" or value == []:
        return {"vr": vr}
    if vr == "PN":
        groups = str(value).split("=")
        name = {key: group for key, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups) if group}
        return {"vr": vr, "Value": [name]} if name else {"vr": vr}
    if vr in {"IS", "US", "UL", "SL", "SS"}:
        return {"vr": vr, "Value": [int(value)]}
    if isinstance(value, list):
        return {"vr": vr, "Value": value}
    return {"vr": vr, "Value": [value]}


COMPRESS_ABOVE = 2048  # bytes: smaller answers are not worth a compressor's time


def json_response(request: web.Request, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    """A DICOM JSON answer, gzip-compressed when the client accepts it: study metadata shrinks about tenfold,
    which is most of the wait for a viewer's first image on a slow link."""
    body = json.dumps(payload, ensure_ascii=False).encode()
    response = web.Response(body=body, content_type=DICOM_JSON, charset="utf-8", headers=headers)
    if len(body) > COMPRESS_ABOVE and "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression(web.ContentCoding.gzip)
    return response
