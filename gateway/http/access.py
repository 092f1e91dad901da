"""Permissions declared where routes are registered, and which role holds which.

Every route is added with :func:`route`, naming the :class:`Permission` it needs and the audit action it is
recorded as; the auth middleware (``gateway.http.auth``) reads the matched route's declaration and never
the URL. ``GRANTS`` is the one table of who may do what.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from enum import Enum

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from storage.index.accounts import Role, User

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Permission(str, Enum):
    """What a route needs. PUBLIC routes are served without a token; all others need one."""

    PUBLIC = "public"
    SESSION = "session"  # end one's own session
    WHOAMI = "whoami"
    METRICS = "metrics"
    AUDIT_TRAIL = "audit-trail"
    QUERY = "query"  # QIDO-RS
    VIEW = "view"  # metadata, frames, renderings and thumbnails
    RETRIEVE = "retrieve"  # whole instances, bulk data, WADO-URI
    STORE = "store"
    READ_REPORT = "read-report"
    WRITE_REPORT = "write-report"  # save a draft, sign it final
    REPORT_TEMPLATES = "report-templates"
    MANAGE_SHARES = "manage-shares"
    REIDENTIFY = "reidentify"
    EMR = "emr"  # the EMR outbox and patient reconciliation


@dataclasses.dataclass(frozen=True)
class Access:
    """A route's declaration: the permission it needs and the audit action it is recorded as (None: not recorded)."""

    permission: Permission
    audit: str | None = None


ROUTE_ACCESS: web.AppKey[dict[AbstractRoute, Access]] = web.AppKey("route_access")

ANY = None  # every method the route has
GET = frozenset({"GET"})  # a referring physician reads by GET, and only by GET
READ = frozenset({"GET", "HEAD"})
_READS = (Permission.WHOAMI, Permission.METRICS, Permission.QUERY, Permission.VIEW, Permission.RETRIEVE,
          Permission.READ_REPORT, Permission.REPORT_TEMPLATES)  # fmt: skip

# Who may use a route of each permission, and by which methods. Not listed: refused.
GRANTS: dict[Role, dict[Permission, frozenset[str] | None]] = {
    Role.ADMIN: {p: ANY for p in Permission if p is not Permission.PUBLIC},
    Role.RADIOLOGIST: {
        **{p: ANY for p in _READS},
        Permission.SESSION: ANY, Permission.STORE: ANY, Permission.WRITE_REPORT: ANY, Permission.MANAGE_SHARES: ANY,
    },  # fmt: skip
    Role.REFERRING: {Permission.SESSION: ANY, **{p: GET for p in _READS}},
    Role.AUDITOR: {Permission.SESSION: ANY, Permission.WHOAMI: ANY, Permission.METRICS: ANY, Permission.AUDIT_TRAIL: ANY},
    # A share link is for viewing its one study (see share_may): not for taking the DICOM files away.
    Role.SHARE: {p: READ for p in (Permission.WHOAMI, Permission.QUERY, Permission.VIEW, Permission.READ_REPORT)},
}


def route(
    app: web.Application, method: str, path: str, handler: Handler, *, permission: Permission, audit: str | None = None
) -> None:
    """Add a route with its declaration. GET also answers HEAD, as aiohttp's ``add_get`` does."""
    declared = app.setdefault(ROUTE_ACCESS, {})
    resource = app.router.add_resource(path)
    methods = ("HEAD", "GET") if method == "GET" else (method,)
    for each in methods:
        declared[resource.add_route(each, handler)] = Access(permission, audit)


def declared(request: web.Request) -> Access | None:
    """The matched route's declaration; None when no route matched (404, 405) or the route declares none."""
    return request.app.get(ROUTE_ACCESS, {}).get(request.match_info.route)


def undeclared(app: web.Application) -> list[str]:
    """Routes added without a declaration (by ``app.router.add_*`` instead of :func:`route`)."""
    table = app.get(ROUTE_ACCESS, {})
    return [f"{r.method} {r.resource.canonical if r.resource else '?'}" for r in app.router.routes() if r not in table]


async def refuse_undeclared(app: web.Application) -> None:
    """On startup: a route without a declaration is a programming error; refuse to serve rather than guess."""
    missing = undeclared(app)
    if missing:
        raise RuntimeError(f"routes without a declared permission: {', '.join(missing)}")


def share_may(user: User, request: web.Request) -> bool:
    """A share link reaches only its own study: a route with a study in its path must name the link's study.

    Routes without one (QIDO at the top, /auth/me) are scoped by ``auth.scope_of``."""
    if "%" in request.rel_url.raw_path:  # UIDs never need escaping; an escaped slash could otherwise pass for another study's path
        return False
    if any(value in ("", ".", "..") for value in request.match_info.values()):
        return False
    return request.match_info.get("study", user.share_study) == user.share_study


def permitted(user: User, request: web.Request, access: Access) -> bool:
    """Whether the user's role holds the route's permission for the request's method (and, for a share, its study)."""
    if access.permission not in GRANTS[user.role]:
        return False
    methods = GRANTS[user.role][access.permission]
    if methods is not ANY and request.method not in methods:
        return False
    return user.role is not Role.SHARE or share_may(user, request)
