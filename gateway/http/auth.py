"""Authentication, role checks and the audit trail of the HTTP server.

Every endpoint but ``/health``, ``/auth/login``, ``/favicon.ico`` and the viewer's files needs ``Authorization:
Bearer <token>``. Roles: ``admin`` (everything), ``radiologist`` (query,
retrieve, store, report, share), ``referring`` (query and retrieve the
studies of patients linked to them or granted to them, and their final
reports), ``auditor`` (the audit trail only), and ``share``: the holder of a
share link's token (``share.…``), who may only view the link's one study.
Every request touching patient data is recorded: who, what, when, from
where, and the outcome (the HTTP status); so is every request made with a
share token. What each route needs, and what it is recorded as, is declared where the route is
registered (``gateway.http.access``); the table of which role holds which permission is there too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.http.access import Permission, declared, permitted
from gateway.http.client import client_address
from gateway.http.errors import http_error
from gateway.http.keys import ACCOUNTS, AUDIT, TOKENS
from gateway.http.oidc_tokens import SsoRefused
from storage.index.accounts import Role, User
from storage.index.scope import Scope
from storage.index.shares import ShareExpired

log = logging.getLogger(__name__)

USER = "user"  # request key of the authenticated User


async def bearer_user(request: web.Request) -> User | None:
    """The user of the request's bearer token, for a public endpoint that shows more to some: None when
    there is no valid token (a dead share link included)."""
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("bearer "):
        return None
    try:
        return await request.app[TOKENS].user(header[7:].strip())
    except (ShareExpired, SsoRefused):
        return None


def _unauthorized(reason: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text=json.dumps({"error": reason}),
        content_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="pacs-gateway"'},
    )


SHARE_ACCESS = "share-access"  # what a share principal's request is recorded as when nothing more specific fits
NO_ROUTE = "no-route"  # what a request matching no route (a 404 or 405 before any handler) is recorded as


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Authenticates, then lets through what the matched route's declared permission (gateway.http.access) allows.

    A request matching no route needs a token too, and reaches no handler but its 404 or 405."""
    access = declared(request)
    if access is not None and access.permission is Permission.PUBLIC:
        return await handler(request)
    action = access.audit if access is not None else None
    header = request.headers.get("Authorization", "")
    user = None
    if header.lower().startswith("bearer "):
        try:
            user = await request.app[TOKENS].user(header[7:].strip(), request)
        except SsoRefused as exc:  # the identity provider's JWT (gateway.http.oidc_tokens), its sign-in recorded
            if exc.status == 403:
                raise http_error(web.HTTPForbidden, str(exc)) from None
            raise _unauthorized(str(exc)) from None
        except ShareExpired as exc:
            request.app[AUDIT].record(
                username=exc.link.username, role=Role.SHARE.value, action=action or SHARE_ACCESS,
                target=request.app[AUDIT].target(request), source=client_address(request), outcome=401,
            )  # fmt: skip
            raise _unauthorized(str(exc)) from None
    if user is None:
        raise _unauthorized("a valid bearer token is required")
    if access is None:  # no route: recorded all the same, whatever the path was aimed at
        action = SHARE_ACCESS if user.role is Role.SHARE else NO_ROUTE
    elif action is None and user.role is Role.SHARE:
        action = SHARE_ACCESS
    status = 500
    try:
        if access is None and (user.role is Role.SHARE or request.match_info.http_exception is None):
            if request.match_info.http_exception is None:
                log.error("route %s declares no permission: refused", request.match_info.route)
            raise http_error(web.HTTPForbidden, f"the {user.role.value} role may not do this")
        if access is not None and not permitted(user, request, access):
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
                source=client_address(request), outcome=status,
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
