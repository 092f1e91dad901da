"""``GET /health`` (liveness and readiness) and ``GET /metrics`` (Prometheus text format).

``/health`` answers anyone, so that a load balancer or a container runtime
can probe it, but anonymously only with ``live`` and ``ready``: the details
(the DICOM SCP's AE title and port, the spool, error texts such as an S3
failure) go to administrators and auditors. The metrics (counts and
latencies, no patient data) are read by any account, not by share links. The
details include the whole cluster as the index knows it: every node and
process with the age of its last heartbeat (stale ones marked) and who holds
each site lease. Metrics stay this process's own.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.http.auth import bearer_user
from gateway.http.keys import (
    DICOM,
    INDEX,
    METRICS,
    OBJECT_STORE,
    SETTINGS,
    SPOOL,
    WORKER_ERROR,
)

from gateway.worker_board import BACKLOG, BOARD
from storage.index.accounts import Role

_CHECK_TIMEOUT = 5.0
CLUSTER_VIEW: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("cluster_view")
DETAIL_ROLES = frozenset({Role.ADMIN, Role.AUDITOR})


async def _probe(check: Callable[[], None]) -> dict[str, Any]:
    try:
        await asyncio.wait_for(asyncio.to_thread(check), _CHECK_TIMEOUT)
    except TimeoutError:
        return {"ok": False, "error": f"no answer within {_CHECK_TIMEOUT:g} s"}
    except Exception as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True}


async def health(request: web.Request) -> web.Response:
    app = request.app
    index, store = await asyncio.gather(_probe(app[INDEX].check), _probe(app[OBJECT_STORE].check))
    spool = app[SPOOL]
    dicom = app[DICOM]
    worker_error = app[WORKER_ERROR]()
    ready = index["ok"] and store["ok"]
    status = 200 if ready else 503
    try:
        user = await bearer_user(request)
    except Exception:  # the index unreachable: the anonymous answer, which says "not ready"
        user = None
    if user is None or user.role not in DETAIL_ROLES:
        return web.json_response({"live": True, "ready": ready}, status=status)
    board = app.get(BOARD)  # every worker's spool and associations, under the supervisor
    backlog = board.backlog() if board is not None else app[BACKLOG]() if BACKLOG in app else (
        spool.backlog_records, spool.backlog_bytes
    )
    workers = board.view() if board is not None else None
    body = {
        "live": True,
        "ready": ready,
        "index": index,
        "object_store": {**store, "backend": app[SETTINGS].storage.backend, **app[OBJECT_STORE].report()},
        "spool": {
            "backlog_instances": backlog[0],
            "backlog_bytes": backlog[1],
            "limit_bytes": spool.max_bytes,
        },
        "storing": {"ok": worker_error is None, "last_error": worker_error},
        "dicom": {
            "ae_title": dicom.settings.ae_title,
            "port": dicom.port if dicom.plain else None,  # None: the plain port is off (dicom_tls.plain false)
            "tls_port": dicom.tls_port,
            "associations": sum(w["associations"] for w in workers) if workers is not None else dicom.active,
        },
    }
    if workers is not None:
        body["workers"] = workers
        body["answered_by"] = os.getpid()  # which worker took this request
    view = app.get(CLUSTER_VIEW)
    if view is not None:
        try:
            body["cluster"] = await asyncio.wait_for(asyncio.to_thread(view), _CHECK_TIMEOUT)
        except Exception as exc:  # the index unreachable: said under "index" already
            body["cluster"] = {"error": type(exc).__name__}
    return web.json_response(body, status=status)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
