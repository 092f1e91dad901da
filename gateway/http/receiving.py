"""``GET /health/ingest``: whether this node can take instances now, for the load balancer's HTTP check.

Unlike ``/health`` (ready only while the index and the object store answer), this holds while the index is away:
receiving needs only the process and its spool, which acknowledges on local disk (README, "When PostgreSQL fails
over"). 200 (the process answers) while the spool's directory is writable, under ``spool.max_bytes`` and its file system keeps ``spool.min_free_bytes``
free; else 503. Public, and it says nothing else.
"""

from __future__ import annotations

import asyncio
import os
import shutil

from aiohttp import web

from gateway.http.access import Permission, route
from gateway.http.keys import SPOOL
from gateway.ingest.spool import SpoolLog


def can_take_instances(spool: SpoolLog) -> bool:
    try:
        free = shutil.disk_usage(spool.directory).free
    except OSError:
        return False
    return (
        os.access(spool.directory, os.W_OK)
        and spool.backlog_bytes < spool.max_bytes
        and free > spool.min_free_bytes
    )


async def ingest_health(request: web.Request) -> web.Response:
    ok = await asyncio.to_thread(can_take_instances, request.app[SPOOL])
    return web.json_response({"ingest": ok}, status=200 if ok else 503)


def add_routes(app: web.Application) -> None:
    route(app, "GET", "/health/ingest", ingest_health, permission=Permission.PUBLIC)
