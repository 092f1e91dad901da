"""Every route declares its permission where it is registered, and the declarations decide as the URL rules did.

``_old_*`` below are the rules the auth middleware applied to URLs before routes declared their
permissions, kept verbatim as the reference: for every route and method of the application, and for
every role, the declared permission must let the same requests through, and record them as the same
audit action.
"""

from __future__ import annotations

import asyncio
import json
import re

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from gateway.http import access
from gateway.http.app import add_routes
from gateway.http.auth import SHARE_ACCESS
from storage.index.accounts import Role, User

STUDY = "1.2.826.0.1.3680043.8.498.1"  # the share link's study
OTHER = "1.2.826.0.1.3680043.8.498.2"
VALUES = {"series": "1.2.826.0.1.3680043.8.498.3", "instance": "1.2.826.0.1.3680043.8.498.4", "frames": "1,2",
          "frame": "1", "tag": "7FE00010", "id": "7", "kind": "patient", "pseudonym": "PSN-1", "name": "app.js"}  # fmt: skip
PRINCIPALS = [User(1, role.value, role) for role in Role if role is not Role.SHARE] + [
    User(2, "link", Role.SHARE, share_study=STUDY)
]

# ---------------------------------------------------------------- the URL rules before declarations

_OLD_PUBLIC = frozenset({"/health", "/health/ingest", "/auth/login", "/favicon.ico"})  # /health/ingest: new, public
# New, public: the single sign-on round trip (gateway.http.oidc_login), before the browser holds any token.
_SSO_PUBLIC = frozenset({"/auth/oidc", "/auth/oidc/login", "/auth/oidc/callback", "/auth/oidc/session"})


def _old_public(path: str) -> bool:
    return path in _OLD_PUBLIC or path in _SSO_PUBLIC or path == "/viewer" or path.startswith("/viewer/")


def _old_action(method: str, path: str) -> str | None:
    parts = path.strip("/").split("/")
    if parts[0] == "studies" and len(parts) >= 3:
        if parts[2:] == ["report", "final"]:
            return "finalize-report"
        if parts[2:] == ["report"]:
            return "read-report" if method in ("GET", "HEAD") else "write-report"
        if parts[2:] == ["shares"]:
            return "share-create" if method == "POST" else "share-list"
    if parts[0] == "shares":
        return "share-revoke"
    if path.startswith("/dicom-web/"):
        if method == "POST":
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
            return "emr-outbox-retry" if method == "POST" else "emr-outbox"
        return "emr-reconcile" if method == "POST" else "emr-reconciliation"
    return None


_SHARE_QUERIES = frozenset({"/auth/me", "/dicom-web/studies", "/dicom-web/series", "/dicom-web/instances"})
_SHARE_VIEWS = frozenset({"series", "instances", "metadata", "rendered", "thumbnail"})


def _old_share_may_read(method: str, path: str, study: str) -> bool:
    if method not in ("GET", "HEAD"):
        return False
    if "%" in path:
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


def _old_allowed(user: User, method: str, path: str, raw_path: str) -> bool:
    if user.role is Role.SHARE:
        return _old_share_may_read(method, raw_path, user.share_study)
    if user.role is Role.ADMIN or path == "/auth/logout":
        return True
    if user.role is Role.AUDITOR:
        return path in ("/audit", "/metrics", "/auth/me")
    if path == "/audit" or path.startswith("/vault/") or path.startswith("/emr/"):
        return False
    parts = path.strip("/").split("/")
    if parts[0] == "shares" or (parts[0] == "studies" and parts[2:] == ["shares"]):
        return user.role is Role.RADIOLOGIST
    if user.role is Role.REFERRING:
        return method == "GET"
    return True


def _old(user: User, method: str, path: str, raw_path: str) -> tuple[bool, bool, str | None]:
    """(public, allowed, audit action) under the URL rules."""
    if _old_public(path):
        return True, True, None
    action = _old_action(method, path) or (SHARE_ACCESS if user.role is Role.SHARE else None)
    return False, _old_allowed(user, method, path, raw_path), action


def _new(user: User, request: web.Request) -> tuple[bool, bool, str | None]:
    declared = access.declared(request)
    assert declared is not None, request.path
    if declared.permission is access.Permission.PUBLIC:
        return True, True, None
    action = declared.audit or (SHARE_ACCESS if user.role is Role.SHARE else None)
    return False, access.permitted(user, request, declared), action


# ---------------------------------------------------------------- the tests


def _app() -> web.Application:
    app = web.Application()
    add_routes(app)
    return app


def test_every_route_declares_its_permission() -> None:
    app = _app()
    routes = list(app.router.routes())
    assert len(routes) > 40
    assert access.undeclared(app) == []
    async def forgotten(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/forgotten", forgotten)  # one added the old way is found
    assert access.undeclared(app) == ["HEAD /forgotten", "GET /forgotten"]


def test_nothing_that_changes_data_is_public() -> None:
    app = _app()
    public = {(r.method, r.resource.canonical) for r in app.router.routes() if app[access.ROUTE_ACCESS][r].permission is access.Permission.PUBLIC}  # type: ignore[union-attr]
    assert public == {
        ("GET", "/health"), ("HEAD", "/health"), ("GET", "/health/ingest"), ("HEAD", "/health/ingest"), ("POST", "/auth/login"), ("GET", "/favicon.ico"), ("HEAD", "/favicon.ico"),
        ("GET", "/viewer"), ("HEAD", "/viewer"), ("GET", "/viewer/"), ("HEAD", "/viewer/"), ("GET", "/viewer/{name}"),
        ("HEAD", "/viewer/{name}"),
        # single sign-on: the provider's round trip, and the viewer taking the session it made (a cookie, read once)
        ("GET", "/auth/oidc"), ("HEAD", "/auth/oidc"), ("GET", "/auth/oidc/login"), ("HEAD", "/auth/oidc/login"),
        ("GET", "/auth/oidc/callback"), ("HEAD", "/auth/oidc/callback"), ("POST", "/auth/oidc/session"),
    }  # fmt: skip


def _requests(app: web.Application) -> list[tuple[str, str]]:
    """Each route and method as a concrete request: the share link's study, another study, and an escaped UID."""
    wanted = []
    for r in app.router.routes():
        canonical = r.resource.canonical  # type: ignore[union-attr]
        path = re.sub(r"\{(\w+)\}", lambda m: VALUES.get(m[1], "{" + m[1] + "}"), canonical)
        for study in (STUDY, OTHER, STUDY.replace(".", "%2E", 1)) if "{study}" in path else (None,):
            wanted.append((r.method, path.replace("{study}", study) if study else path))
    return wanted


def test_declared_permissions_decide_as_the_url_rules_did() -> None:
    app = _app()
    requests = _requests(app)

    @web.middleware
    async def probe(request: web.Request, handler: object) -> web.Response:
        decisions = {u.username: [_old(u, request.method, request.path, request.rel_url.raw_path), _new(u, request)] for u in PRINCIPALS}
        return web.Response(headers={"X-Decisions": json.dumps(decisions)})  # a header: HEAD answers have no body

    app.middlewares.append(probe)

    async def run() -> list[str]:
        differences = []
        async with TestServer(app, host="127.0.0.1") as server, ClientSession() as session:
            for method, path in requests:
                async with session.request(method, server.make_url(path).with_path(path, encoded=True)) as response:
                    assert "X-Decisions" in response.headers, (method, path, response.status)
                    for username, (old, new) in json.loads(response.headers["X-Decisions"]).items():
                        if old != new:
                            differences.append(f"{username} {method} {path}: before {old}, now {new}")
        return differences

    assert asyncio.run(run()) == []
