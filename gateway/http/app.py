"""The HTTP application: health, metrics, DICOMweb, reports and share links."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.audit import AuditWriter, cleanup_context
from gateway.http import auth, health, qido, rendered, reports, shares, stow, vault_routes, viewer_routes, wado
from gateway.http import access, emr_routes, login, login_totp, oidc_login, receiving
from gateway.http.oidc_keys import ProviderKeys
from gateway.http.oidc_tokens import OidcTokens
from gateway.http.access import Permission, route
from gateway.http.errors import error_middleware
from gateway.http.origin import strict_transport_security
from gateway.http.tokens import Tokens
from gateway.http.keys import (
    ACCOUNTS,
    AUDIT,
    DICOM,
    INDEX,
    INGEST,
    LOCATIONS,
    METRICS,
    OBJECT_STORE,
    QUERIES,
    REPORTING,
    SETTINGS,
    SHARES,
    SPOOL,
    TOKENS,
    VAULT,
    WORKER_ERROR,
    DicomListener,
)
from gateway.ingest.service import IngestService
from gateway.ingest.spool import SpoolLog
from gateway.metrics import GatewayMetrics
from gateway.query.qido import QidoService
from gateway.query.service import QueryService
from gateway.reporting.service import ReportingService
from gateway.settings import Settings
from gateway.totp import SecondFactor
from gateway.vault import PseudonymVault
from storage.index.accounts import AccountStore
from storage.index.database import IndexDatabase
from storage.index.commit_watch import CommitWatch
from storage.index.instance_locations import InstanceLocations
from storage.index.login_throttle import LoginThrottle
from storage.index.reports import ReportStore
from storage.index.shares import ShareStore
from storage.index.sso_accounts import SsoAccounts
from storage.object_store.base import ObjectStore


# The viewer's own code (and /viewer/<file>) and its icon: no patient data, so they set their own Cache-Control.
VIEWER_FILES = ("/viewer", "/viewer/", "/favicon.ico")


async def response_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Headers every response gets, errors and streamed ones included, before they are sent.

    Anything but the viewer's own files and icon may carry patient data (DICOMweb, renderings, reports, the
    audit trail, share links, even an error naming a study): no browser or proxy may keep a copy. No
    response is sniffed into another type, nor sends where it came from (share tokens, study UIDs)
    to another site."""
    headers = response.headers
    strict_transport_security(request, response)
    headers["X-Content-Type-Options"] = "nosniff"
    headers.setdefault("Referrer-Policy", "no-referrer")
    if request.path in VIEWER_FILES or request.path.startswith("/viewer/"):
        headers.setdefault("Cache-Control", "no-cache")
    else:
        headers["Cache-Control"] = "no-store"


def create_http_app(
    settings: Settings,
    index: IndexDatabase,
    store: ObjectStore,
    spool: SpoolLog,
    ingest: IngestService,
    dicom: DicomListener,
    metrics: GatewayMetrics,
    worker_error: Callable[[], Any],
    audit: AuditWriter,
    vault: PseudonymVault | None = None,
) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth.auth_middleware])
    app.on_response_prepare.append(response_headers)
    accounts = AccountStore(index.engine)
    app[ACCOUNTS] = accounts
    app[login.THROTTLE] = LoginThrottle(index.engine)
    app[login_totp.SECOND_FACTOR] = login_totp.SecondFactorLogin(
        SecondFactor(index.engine, secret=settings.deid_secret(), issuer=settings.login.totp_issuer), settings.login.trusted_networks
    )
    app[SHARES] = ShareStore(index.engine)
    watch = CommitWatch(index.engine)
    app[TOKENS] = Tokens(accounts, app[SHARES], watch)
    app[LOCATIONS] = InstanceLocations(index, watch)
    if settings.oidc.issuer:  # the hospital's identity provider: its JWTs as bearer tokens, the viewer's sign-in
        keys = ProviderKeys(settings.oidc)
        app[TOKENS].sso = OidcTokens(settings.oidc, keys, SsoAccounts(index.engine), audit)
        app.on_cleanup.append(lambda _app: keys.close())

    async def close_watch(_app: web.Application) -> None:
        watch.close()

    app.on_cleanup.append(close_watch)
    app[REPORTING] = ReportingService(ReportStore(index.engine), index, metrics)
    app[AUDIT] = audit
    app.cleanup_ctx.append(cleanup_context(audit))
    app[SETTINGS] = settings
    app[INDEX] = index
    app[OBJECT_STORE] = store
    app[SPOOL] = spool
    app[INGEST] = ingest
    app[DICOM] = dicom
    app[METRICS] = metrics
    app[WORKER_ERROR] = worker_error
    app[VAULT] = vault
    app[QUERIES] = QidoService(QueryService(index), vault)
    add_routes(app)
    app.on_startup.append(access.refuse_undeclared)
    return app


def add_routes(app: web.Application) -> None:
    """Every route with its permission (gateway.http.access): the auth middleware reads nothing else."""
    route(app, "GET", "/health", health.health, permission=Permission.PUBLIC)  # shows more to some (auth.bearer_user)
    route(app, "GET", "/metrics", health.metrics, permission=Permission.METRICS)
    receiving.add_routes(app)  # GET /health/ingest, the balancer's check
    route(app, "POST", "/auth/login", login.login, permission=Permission.PUBLIC)
    route(app, "POST", "/auth/logout", login.logout, permission=Permission.SESSION)
    route(app, "GET", "/auth/me", auth.me, permission=Permission.WHOAMI)
    oidc_login.add_routes(app)  # the viewer's single sign-on
    route(app, "GET", "/audit", auth.audit_trail, permission=Permission.AUDIT_TRAIL, audit="read-audit")
    qido.add_routes(app)
    wado.add_routes(app)
    rendered.add_routes(app)
    viewer_routes.add_routes(app)
    for path in ("/dicom-web/studies", "/dicom-web/studies/{study}"):  # STOW-RS
        route(app, "POST", path, stow.store_instances, permission=Permission.STORE, audit="store")
    reports.add_routes(app)
    shares.add_routes(app)
    route(app, "GET", "/vault/{kind}/{pseudonym}", vault_routes.reveal, permission=Permission.REIDENTIFY, audit="reidentify")
    emr_routes.add_routes(app)
