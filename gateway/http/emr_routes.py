"""Administration of the EMR link (administrators only; every request is in the audit trail).

- ``GET /emr/outbox?state=pending|failed|delivered&limit=&offset=``: messages, newest first, without their payload;
- ``POST /emr/outbox/{id}/retry``: an undelivered message is tried at once;
- ``GET /emr/reconciliation?state=open|resolved|all``: studies whose EMR patient could not be told;
- ``POST /emr/reconciliation/{id}/resolve`` with ``{"patient": "Patient/<id>"}``: link the study to that
  Patient by hand; its waiting messages are sent at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Protocol

from aiohttp import web

from gateway.http.access import Permission, route
from gateway.http.auth import USER
from gateway.http.errors import http_error
from gateway.http.keys import INDEX
from storage.index.outbox import STATES, Outbox
from storage.index.reconciliation import AlreadyResolved, NoSuchItem, ReconciliationQueue

log = logging.getLogger(__name__)

class _Wakeable(Protocol):
    def wake(self) -> None: ...


EMR_LINK = web.AppKey("emr_link", _Wakeable)  # the running EmrLink (gateway.emr.link), when the gateway has one
_PATIENT_REF = re.compile(r"Patient/[A-Za-z0-9\-.]{1,64}")


def _paging(request: web.Request) -> tuple[int, int]:
    try:
        limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
        offset = max(int(request.query.get("offset", "0")), 0)
    except ValueError:
        raise http_error(web.HTTPBadRequest, "limit and offset must be whole numbers") from None
    return limit, offset


def _pk(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise http_error(web.HTTPNotFound, "no such item") from None


def _wake(request: web.Request) -> None:
    link = request.app.get(EMR_LINK)
    if link is not None:
        link.wake()


async def outbox_list(request: web.Request) -> web.Response:
    state = request.query.get("state") or None
    if state is not None and state not in STATES:
        raise http_error(web.HTTPBadRequest, f"state must be one of {', '.join(STATES)}")
    limit, offset = _paging(request)
    rows = await asyncio.to_thread(Outbox(request.app[INDEX].engine).listing, state, limit=limit, offset=offset)
    return web.json_response(rows)


async def outbox_retry(request: web.Request) -> web.Response:
    pk = _pk(request)
    outbox = Outbox(request.app[INDEX].engine)
    if not await asyncio.to_thread(outbox.make_due, pk=pk):
        row = await asyncio.to_thread(outbox.row, pk)
        if row is None:
            raise http_error(web.HTTPNotFound, "no such outbox message")
        raise http_error(web.HTTPConflict, "the message is delivered already")
    _wake(request)
    log.info("outbox row %d retried by %s", pk, request[USER].username)
    return web.json_response(await asyncio.to_thread(outbox.row, pk))


async def reconciliation_list(request: web.Request) -> web.Response:
    state = request.query.get("state", "open")
    if state not in ("open", "resolved", "all"):
        raise http_error(web.HTTPBadRequest, "state must be open, resolved or all")
    limit, offset = _paging(request)
    queue = ReconciliationQueue(request.app[INDEX].engine)
    items = await asyncio.to_thread(queue.listing, None if state == "all" else state, limit=limit, offset=offset)
    return web.json_response([item.to_json() for item in items])


async def reconciliation_resolve(request: web.Request) -> web.Response:
    pk = _pk(request)
    try:
        body = await request.json()
    except ValueError:
        raise http_error(web.HTTPBadRequest, 'send {"patient": "Patient/<id>"} as JSON') from None
    patient = body.get("patient") if isinstance(body, dict) else None
    if not isinstance(patient, str) or not _PATIENT_REF.fullmatch(patient):
        raise http_error(web.HTTPBadRequest, 'patient must be a reference "Patient/<id>"')
    queue = ReconciliationQueue(request.app[INDEX].engine)
    try:
        item = await asyncio.to_thread(queue.resolve, pk, patient_ref=patient, by=request[USER].username)
    except NoSuchItem:
        raise http_error(web.HTTPNotFound, "no such reconciliation item") from None
    except AlreadyResolved:
        raise http_error(web.HTTPConflict, "the item is resolved already") from None
    _wake(request)
    log.info("reconciliation item %d resolved by %s", pk, request[USER].username)
    resolved = await asyncio.to_thread(queue.get, pk)
    return web.Response(
        body=json.dumps((resolved or item).to_json()).encode(), content_type="application/json", charset="utf-8"
    )


def add_routes(app: web.Application) -> None:
    route(app, "GET", "/emr/outbox", outbox_list, permission=Permission.EMR, audit="emr-outbox")
    route(app, "POST", "/emr/outbox/{id}/retry", outbox_retry, permission=Permission.EMR, audit="emr-outbox-retry")
    route(app, "GET", "/emr/reconciliation", reconciliation_list, permission=Permission.EMR, audit="emr-reconciliation")
    route(app, "POST", "/emr/reconciliation/{id}/resolve", reconciliation_resolve, permission=Permission.EMR, audit="emr-reconcile")
