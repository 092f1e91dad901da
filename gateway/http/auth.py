"""Authentication, role checks and the audit trail of the HTTP server.

Every endpoint but ``/health``, ``/auth/login``, ``/favicon.ico`` and the viewer's files needs ``Authorization:
Bearer <token>``. Roles: ``admin`` (everything), ``radiologist`` (query,
retrieve, store, report, share), ``referring`` (query and retrieve the
studies of patients linked to them or granted to them, and their final
reports), ``auditor`` (the audit trail only), and ``share``: the holder of a
share link's token (``share.…``), who may only view the link's one study.
Every request touching patient data is recorded: who, what, when, from
where, and the outcome (the HTTP status); so is every request made with a
share token.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.http.errors import http_error
from gateway.http.keys import ACCOUNTS, AUDIT, TOKENS
from storage.index.accounts import Role, User
from storage.index.scope import Scope
from storage.index.shares import ShareExpired

log = logging.getLogger(__name__)

USER = "user"  # request key of the authenticated User
PUBLIC_PATHS = frozenset({"/health", "/auth/login", "/favicon.ico"})


async def bearer_user(request: web.Request) -> User | None:
    """The user of the request's bearer token, for a public endpoint that shows more to some: None when
    there is no valid token (a dead share link included)."""
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("bearer "):
        return None
    try:
        return await request.app[TOKENS].user(header[7:].strip())
    except ShareExpired:
        return None


def _unauthorized(reason: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text=json.dumps({"error": reason}),
        content_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="pacs-gateway"'},
    )


SHARE_ACCESS = "share-access"  # what a share principal's request is recorded as when nothing more specific fits


def _action(request: web.Request) -> str | None:
    path = request.path
    parts = path.strip("/").split("/")
    if parts[0] == "studies" and len(parts) >= 3:
        if parts[2:] == ["report", "final"]:
            return "finalize-report"
        if parts[2:] == ["report"]:
            return "read-report" if request.method in ("GET", "HEAD") else "write-report"
        if parts[2:] == ["shares"]:
            return "share-create" if request.method == "POST" else "share-list"
    if parts[0] == "shares":
        return "share-revoke"
    if path.startswith("/dicom-web/"):
        if request.method == "POST":
            return "store"
        if path.endswith("/metadata") or "/frames/" in path or "/bulkdata/" in path:
            return "retrieve"
        last = path.rstrip("/").rsplit("/", 1)[-1]
        return "query" if last in ("studies", "series", "instances") else "retrieve"
    if path == "/wado":
        return "retrieve"
    if path.startswith("/vault/"):
        return "reidentify"
    if path == "/audit":
        return "read-audit"
    if path.startswith("/emr/"):
        if parts[1:2] == ["outbox"]:
            return "emr-outbox-retry" if request.method == "POST" else "emr-outbox"
        return "emr-reconcile" if request.method == "POST" else "emr-reconciliation"
    return None


_SHARE_QUERIES = frozenset({"/auth/me", "/dicom-web/studies", "/dicom-web/series", "/dicom-web/instances"})
_SHARE_VIEWS = frozenset({"series", "instances", "metadata", "rendered", "thumbnail"})


def _share_may_read(request: web.Request, study: str) -> bool:
    """A share link opens QIDO (scoped to its study), and its study's metadata, frames, renderings and report.

    Not whole instances nor bulk data: a link is for viewing, not for taking the DICOM files away."""
    if request.method not in ("GET", "HEAD"):
        return False
    path = request.rel_url.raw_path
    if "%" in path:  # UIDs never need escaping; an escaped slash could otherwise pass for another study's path
        return False
    if path in _SHARE_QUERIES:
        return True
    parts = path.strip("/").split("/")
    if parts == ["studies", study, "report"]:
        return True
    rest = parts[3:]
    if parts[:3] != ["dicom-web", "studies", study] or not rest or any(p in ("", ".", "..") for p in rest):
        return False
    return rest[-1] in _SHARE_VIEWS or (len(rest) >= 2 and rest[-2] == "frames")


def _manages_shares(path: str) -> bool:
    parts = path.strip("/").split("/")
    return parts[0] == "shares" or (parts[0] == "studies" and parts[2:] == ["shares"])


def _allowed(user: User, request: web.Request) -> bool:
    path = request.path
    if user.role is Role.SHARE:
        return _share_may_read(request, user.share_study)
    if user.role is Role.ADMIN or path == "/auth/logout":
        return True
    if user.role is Role.AUDITOR:
        return path in ("/audit", "/metrics", "/auth/me")
    if path == "/audit" or path.startswith("/vault/") or path.startswith("/emr/"):
        return False
    if _manages_shares(path):
        return user.role is Role.RADIOLOGIST
    if user.role is Role.REFERRING:
        return request.method == "GET"
    return True


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS or request.path == "/viewer" or request.path.startswith("/viewer/"):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    user = None
    if header.lower().startswith("bearer "):
        try:
            user = await request.app[TOKENS].user(header[7:].strip())
        except ShareExpired as exc:
            request.app[AUDIT].record(
                username=exc.link.username, role=Role.SHARE.value, action=_action(request) or SHARE_ACCESS,
                target=request.app[AUDIT].target(request), source=request.remote or "", outcome=401,
            )  # fmt: skip
            raise _unauthorized(str(exc)) from None
    if user is None:
        raise _unauthorized("a valid bearer token is required")
    action = _action(request)
    if action is None and user.role is Role.SHARE:
        action = SHARE_ACCESS
    status = 500
    try:
        if not _allowed(user, request):
            raise http_error(web.HTTPForbidden, f"the {user.role.value} role may not do this")
        request[USER] = user
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if action is not None:
            request.app[AUDIT].record(
                username=user.username, role=user.role.value, action=action, target=request.app[AUDIT].target(request),
                source=request.remote or "", outcome=status,
            )  # fmt: skip


async def audit_trail(request: web.Request) -> web.Response:
    since = None
    if "since" in request.query:
        try:
            since = dt.datetime.fromisoformat(request.query["since"])
        except ValueError:
            raise http_error(web.HTTPBadRequest, "since must be an ISO 8601 date or time") from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=dt.timezone.utc)
    try:
        limit = min(max(int(request.query.get("limit", "1000")), 1), 10_000)
    except ValueError:
        raise http_error(web.HTTPBadRequest, "limit must be a whole number") from None
    rows = await asyncio.to_thread(request.app[ACCOUNTS].audit_trail, since=since, username=request.query.get("user"), limit=limit)
    return web.json_response(list(rows))


async def me(request: web.Request) -> web.Response:
    """Who the token stands for, so that a client can show the right screen."""
    user: User = request[USER]
    body = {"username": user.username, "role": user.role.value, "display_name": user.display_name}
    if user.role is Role.SHARE:
        body["study_uid"] = user.share_study
    return web.Response(body=json.dumps(body, ensure_ascii=False).encode(), content_type="application/json", charset="utf-8")


def scope_of(request: web.Request) -> Scope | None:
    """None when the user sees everything; else what they may see (storage.index.scope)."""
    user: User = request[USER]
    if user.role is Role.SHARE:
        return Scope(study_uids=(user.share_study,))
    if user.role is not Role.REFERRING:
        return None
    return Scope(user_pk=user.pk)
