"""The Accept header (RFC 9110 12.5.1) as DICOMweb uses it: media ranges with parameters, best first."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from gateway.http.dicom_json import DICOM_JSON
from gateway.http.dicom_xml import DICOM_XML
from gateway.http.errors import http_error


@dataclass(frozen=True)
class MediaRange:
    media_type: str  # lower case, e.g. "multipart/related", "*/*"
    params: dict[str, str] = field(default_factory=dict)  # lower-case names, values unquoted; q left out

    def matches(self, media_type: str) -> bool:
        """Whether this range covers ``media_type`` (``type/subtype``)."""
        kind = media_type.split("/")[0]
        return self.media_type in ("*/*", f"{kind}/*", media_type)


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double quotes (a quoted ``type`` may hold ``;`` or ``,`` in theory)."""
    parts, current, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == separator and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def media_ranges(header: str | None, default: str = "*/*") -> list[MediaRange]:
    """The ranges of an Accept header, highest quality first (ties keep their order); q=0 ranges are left out.
    An absent or empty header accepts ``default``."""
    text = (header or "").strip() or default
    ranked: list[tuple[float, int, MediaRange]] = []
    for position, part in enumerate(_split(text, ",")):
        pieces = [p.strip() for p in _split(part, ";")]
        if not pieces[0]:
            continue
        params: dict[str, str] = {}
        quality = 1.0
        for piece in pieces[1:]:
            key, _, value = piece.partition("=")
            key, value = key.strip().lower(), value.strip().strip('"')
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
            elif key:
                params[key] = value
        if quality > 0:
            ranked.append((-quality, position, MediaRange(pieces[0].lower(), params)))
    return [media for _, _, media in sorted(ranked, key=lambda r: (r[0], r[1]))]


def dicom_documents_type(request: web.Request, what: str) -> str:
    """DICOM_JSON, or DICOM_XML (a multipart/related of one Native DICOM Model document each), as Accept prefers.

    406 naming what ``what`` (e.g. "QIDO-RS") is offered as, when Accept allows neither."""
    for accepted in media_ranges(request.headers.get("Accept")):
        if accepted.media_type in (DICOM_JSON, "application/json", "application/*", "*/*"):
            return DICOM_JSON
        if accepted.media_type in ("multipart/related", "multipart/*") and accepted.params.get("type", DICOM_XML) == DICOM_XML:
            return DICOM_XML
    raise http_error(web.HTTPNotAcceptable, f'{what} is offered as {DICOM_JSON} or multipart/related; type="{DICOM_XML}"')
