"""Authentication, role checks and the audit trail of the HTTP server.

Every endpoint but ``/health`` and ``/auth/login`` needs ``Authorization:
Bearer <token>``. Roles: ``admin`` (everything), ``radiologist`` (query,
retrieve, store), ``referring`` (query and retrieve the studies of patients
linked to them or granted to them, nothing else), ``auditor`` (the audit
trail only). Every request touching patient data is recorded: who, what,
when, from where, and the outcome (the HTTP status).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.http.errors import http_error
from gateway.http.keys import ACCOUNTS, AUDIT, TOKENS
from storage.index.accounts import AccountStore, Role, User

log = logging.getLogger(__name__)

USER = "user"  # request key of the authenticated User
PUBLIC_PATHS = frozenset({"/health", "/auth/login"})
LOGIN_TOKEN_HOURS = 12.0
TOKEN_CACHE_SECONDS = 5.0


class TokenCache:
    """Recently checked tokens, for a few seconds: a viewer fetching hundreds of frames is not one database
    read per frame. A revoked or expired token stops working within ``TOKEN_CACHE_SECONDS``."""

    def __init__(self, accounts: AccountStore) -> None:
        self.accounts = accounts
        self._seen: dict[str, tuple[float, User | None]] = {}

    async def user(self, token: str) -> User | None:
        now = time.monotonic()
        cached = self._seen.get(token)
        if cached is not None and now - cached[0] < TOKEN_CACHE_SECONDS:
            return cached[1]
        user = await asyncio.to_thread(self.accounts.token_user, token)
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[token] = (now, user)
        return user


def _action(request: web.Request) -> str | None:
    path = request.path
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
    return None


def _allowed(user: User, request: web.Request) -> bool:
    path = request.path
    if user.role is Role.ADMIN:
        return True
    if user.role is Role.AUDITOR:
        return path in ("/audit", "/metrics")
    if path == "/audit" or path.startswith("/vault/"):
        return False
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
        user = await request.app[TOKENS].user(header[7:].strip())
    if user is None:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "a valid bearer token is required"}),
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="pacs-gateway"'},
        )
    action = _action(request)
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


async def login(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        username, password = str(body["username"]), str(body["password"])
    except (ValueError, KeyError, TypeError):
        raise http_error(web.HTTPBadRequest, 'send {"username": ..., "password": ...} as JSON') from None
    accounts = request.app[ACCOUNTS]
    user = await asyncio.to_thread(accounts.authenticate, username, password)
    outcome = 200 if user else 401
    request.app[AUDIT].record(
        username=username[:64], role=user.role.value if user else "", action="login", target="/auth/login",
        source=request.remote or "", outcome=outcome,
    )  # fmt: skip
    if user is None:
        raise http_error(web.HTTPUnauthorized, "unknown user or wrong password")
    token = await asyncio.to_thread(accounts.issue_token, user, hours=LOGIN_TOKEN_HOURS, label="login")
    body = {"token": token, "expires_in": int(LOGIN_TOKEN_HOURS * 3600), "role": user.role.value, "display_name": user.display_name}
    return web.json_response(body)


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


def scope_of(request: web.Request) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """None when the user sees everything; else the patient IDs and study UIDs they may see."""
    user: User = request[USER]
    if user.role is not Role.REFERRING:
        return None
    return request.app[ACCOUNTS].scope(user)
