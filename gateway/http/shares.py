"""Share links: ``POST``/``GET /studies/{study}/shares`` and ``DELETE /shares/{id}``, for administrators and radiologists.

A link's URL is ``<http.public_url>/viewer/#share=<token>``: the token rides
in the fragment, which browsers never send to a server, and the URL carries
no patient data. The viewer sends it back as ``Authorization: Bearer share.…``.
A link goes to someone else, so its address never comes from the request
(a forged ``Host`` would send them, token and all, to another site): while
``http.public_url`` is unset, no link is made.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
from typing import Any
from urllib.parse import urlsplit

import segno
from aiohttp import web

from gateway.http.access import Permission, route
from gateway.http.auth import USER
from gateway.http.errors import http_error
from gateway.http.keys import SETTINGS, SHARES
from storage.index.reports import NoSuchStudy
from storage.index.shares import ShareLink
from storage.uids import is_valid_uid

log = logging.getLogger(__name__)

DEFAULT_HOURS = 72.0
MAX_LABEL = 128


def link_json(link: ShareLink) -> dict[str, Any]:
    return {
        "id": link.pk,
        "label": link.label,
        "created_by": link.created_by,
        "created_at": link.created_at.isoformat(),
        "expires_at": link.expires_at.isoformat(),
        "revoked": link.revoked,
        "revoked_at": link.revoked_at.isoformat() if link.revoked_at else None,
        "revoked_by": link.revoked_by or None,
        "active": link.active(),
    }


def share_base(public_url: str) -> str:
    """The configured public URL that links are made under; raises 503 while it is unset or not an http(s) URL."""
    base = public_url.strip().rstrip("/")
    if not base:
        raise http_error(
            web.HTTPServiceUnavailable,
            "share links need http.public_url, the address patients and outside doctors reach the gateway at; "
            "an administrator must set it",
        )
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise http_error(web.HTTPServiceUnavailable, "http.public_url is not an http:// or https:// URL; share links need one")
    return base


def qr_svg(url: str) -> str:
    """An SVG document of the URL as a QR code (error correction M: survives a creased printout)."""
    out = io.BytesIO()
    segno.make_qr(url, error="m").save(out, kind="svg", scale=4, border=4, title="QR")
    return out.getvalue().decode("utf-8")


def _study(request: web.Request) -> str:
    study = request.match_info["study"]
    if not is_valid_uid(study):
        raise http_error(web.HTTPBadRequest, f"{study!r} is not a valid DICOM UID")
    return study


async def _options(request: web.Request) -> tuple[float, str]:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise http_error(web.HTTPBadRequest, "send the options as JSON") from None
    if not isinstance(body, dict) or set(body) - {"hours", "label"}:
        raise http_error(web.HTTPBadRequest, 'send {"hours": number, "label": text}, both optional')
    hours = body.get("hours", DEFAULT_HOURS)
    most = request.app[SETTINGS].http.share_max_hours
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not math.isfinite(hours) or not 0 < hours <= most:
        raise http_error(web.HTTPBadRequest, f"hours must be a number above 0 and at most {most:g}")
    label = body.get("label", "")
    if not isinstance(label, str) or len(label) > MAX_LABEL:
        raise http_error(web.HTTPBadRequest, f"label must be text of at most {MAX_LABEL} characters")
    return float(hours), label.strip()


async def create(request: web.Request) -> web.Response:
    study = _study(request)
    hours, label = await _options(request)
    base = share_base(request.app[SETTINGS].http.public_url)
    user = request[USER]
    try:
        token, link = await asyncio.to_thread(
            request.app[SHARES].create, study, hours=hours, label=label, created_by=user.username
        )
    except NoSuchStudy:
        raise http_error(web.HTTPNotFound, "no such study") from None
    url = f"{base}/viewer/#share={token}"
    log.info("share link %d made by %s, valid %.4g h", link.pk, user.username, hours)
    svg = await asyncio.to_thread(qr_svg, url)
    body = {"id": link.pk, "url": url, "expires_at": link.expires_at.isoformat(), "label": link.label, "qr_svg": svg}
    return web.json_response(body, status=201)


async def list_links(request: web.Request) -> web.Response:
    links = await asyncio.to_thread(request.app[SHARES].for_study, _study(request))
    return web.json_response([link_json(link) for link in links])


async def revoke(request: web.Request) -> web.Response:
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9):
        raise http_error(web.HTTPNotFound, "no such share link")
    pk = int(raw)
    user = request[USER]
    link = await asyncio.to_thread(request.app[SHARES].revoke, pk, by=user.username)
    if link is None:
        raise http_error(web.HTTPNotFound, "no such share link")
    log.info("share link %d revoked by %s", pk, user.username)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    route(app, "POST", "/studies/{study}/shares", create, permission=Permission.MANAGE_SHARES, audit="share-create")
    route(app, "GET", "/studies/{study}/shares", list_links, permission=Permission.MANAGE_SHARES, audit="share-list")
    route(app, "DELETE", "/shares/{id}", revoke, permission=Permission.MANAGE_SHARES, audit="share-revoke")
