"""``GET /vault/{kind}/{pseudonym}``: what a pseudonym stands for, for administrators."""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from dicom_rules.vault import VaultSealError
from gateway.http.errors import http_error
from gateway.http.auth import USER
from gateway.http.keys import VAULT
from gateway.vault import KINDS

log = logging.getLogger(__name__)


async def reveal(request: web.Request) -> web.Response:
    user = request[USER]  # an administrator: the auth middleware lets no other role here
    vault = request.app[VAULT]
    if vault is None:
        raise http_error(web.HTTPNotFound, "this gateway holds no pseudonym vault")
    kind, pseudonym = request.match_info["kind"], request.match_info["pseudonym"]
    if kind not in KINDS:
        raise http_error(web.HTTPBadRequest, f"kind must be one of {', '.join(KINDS)}")
    try:
        original = await asyncio.to_thread(vault.reveal, kind, pseudonym)
    except VaultSealError as exc:
        raise http_error(web.HTTPConflict, str(exc)) from None
    log.info("vault read by %s: %s %s (%s)", user.username, kind, pseudonym, "found" if original else "unknown")
    if original is None:
        raise http_error(web.HTTPNotFound, f"no {kind} with that pseudonym")
    return web.Response(body=json.dumps(original, ensure_ascii=False).encode(), content_type="application/json", charset="utf-8")
