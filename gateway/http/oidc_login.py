"""The viewer's sign-in through the identity provider: OpenID Connect authorization code flow with PKCE (S256).

``GET /auth/oidc`` tells the viewer whether single sign-on is configured. ``GET /auth/oidc/login`` sends the browser
to the provider with a fresh ``state``, ``nonce`` and ``code_challenge``; their secrets (state, nonce, PKCE
verifier) stay in an HttpOnly cookie of the browser's own, scoped to ``/auth/oidc``, so that any gateway process
can finish the sign-in. ``GET /auth/oidc/callback`` checks the state, exchanges the code at the provider's token
endpoint (server side, with the client secret when one is configured), verifies the ID token (signature, issuer,
audience = the client ID, nonce), maps its claims as for bearer tokens (gateway.http.oidc_tokens) and issues the
gateway's own session token, as a local login does. That token is handed over in a short-lived HttpOnly cookie
readable only by ``POST /auth/oidc/session``, never in a URL: only the protocol's own code and state are.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from gateway.http.access import Permission, route
from gateway.http.client import client_address
from gateway.http.keys import ACCOUNTS, AUDIT, TOKENS
from gateway.http.login import LOGIN_TOKEN_HOURS
from gateway.http.oidc_keys import ProviderUnreachable
from gateway.http.oidc_tokens import OidcTokens, SsoRefused, looks_like_jwt
from gateway.http.origin import is_https
from gateway.http.urls import public_base

log = logging.getLogger(__name__)

FLOW_COOKIE = "pacsgw_oidc"  # state, nonce and PKCE verifier of a sign-in under way
HANDOFF_COOKIE = "pacsgw_sso"  # the gateway's session token, until the viewer takes it
FLOW_SECONDS = 600
HANDOFF_SECONDS = 60


def code_challenge(verifier: str) -> str:
    """PKCE S256 (RFC 7636, 4.2): BASE64URL(SHA256(ASCII(verifier))), no padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode("ascii")


def _sso(request: web.Request) -> OidcTokens:
    sso = request.app[TOKENS].sso
    if sso is None or not sso.settings.client_id:
        raise web.HTTPNotFound(text="single sign-on is not configured")
    return sso


def _redirect_uri(request: web.Request, sso: OidcTokens) -> str:
    return sso.settings.redirect_uri or f"{public_base(request)}/auth/oidc/callback"  # X-Forwarded-* from proxies only


def _cookie(response: web.StreamResponse, request: web.Request, name: str, value: str, path: str, seconds: int) -> None:
    response.set_cookie(name, value, path=path, max_age=seconds, httponly=True, samesite="Lax", secure=is_https(request))


def _redirect(location: str, status: int = 302) -> web.Response:
    return web.Response(status=status, headers={"Location": location})


def _back_to_viewer(why: str) -> web.Response:
    """To the viewer's sign-in page with a reason word in the fragment (no code, no token, no name)."""
    return _redirect(f"/viewer/#sso-{why}")


async def status(request: web.Request) -> web.Response:
    sso = request.app[TOKENS].sso
    enabled = sso is not None and bool(sso.settings.client_id)
    return web.json_response({"enabled": enabled, "login": "/auth/oidc/login" if enabled else None})


async def start(request: web.Request) -> web.Response:
    sso = _sso(request)
    try:
        endpoint = (await sso.keys.endpoints())["authorization_endpoint"]
    except (ProviderUnreachable, KeyError) as exc:
        log.error("single sign-on unavailable (503): %s", exc if isinstance(exc, ProviderUnreachable) else "no authorization_endpoint")
        raise web.HTTPServiceUnavailable(text="the identity provider cannot be reached: try again later") from None
    state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    scopes = ["openid", *(s for s in sso.settings.scopes if s != "openid")]
    query = {
        "response_type": "code", "client_id": sso.settings.client_id, "redirect_uri": _redirect_uri(request, sso),
        "scope": " ".join(scopes), "state": state, "nonce": nonce,
        "code_challenge": code_challenge(verifier), "code_challenge_method": "S256",
    }  # fmt: skip
    response = _redirect(f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}")
    _cookie(response, request, FLOW_COOKIE, f"{state}.{nonce}.{verifier}", "/auth/oidc", FLOW_SECONDS)
    return response


async def _exchange(request: web.Request, sso: OidcTokens, code: str, verifier: str) -> dict[str, Any]:
    """The provider's token answer for the code; raises SsoRefused when it gives none."""
    endpoint = (await sso.keys.endpoints()).get("token_endpoint")
    if not isinstance(endpoint, str):
        raise SsoRefused("the identity provider's metadata has no token_endpoint")
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": _redirect_uri(request, sso),
            "client_id": sso.settings.client_id, "code_verifier": verifier}  # fmt: skip
    secret = sso.settings.client_secret
    auth = aiohttp.BasicAuth(sso.settings.client_id, secret) if secret else None
    status_code, answer = await sso.keys.post_form(endpoint, form, auth)
    if status_code != 200 or not isinstance(answer.get("id_token"), str):
        raise SsoRefused(f"the identity provider refused the code ({status_code} {str(answer.get('error', ''))[:40]})")
    return answer


async def callback(request: web.Request) -> web.Response:
    sso = _sso(request)
    audit = request.app[AUDIT]
    source = client_address(request)

    def record(outcome: int, username: str = "", role: str = "", why: str = "") -> None:
        target = "/auth/oidc/callback" + (f" {why}" if why else "")
        audit.record(username=username, role=role, action="sso-login", target=target[:300], source=source, outcome=outcome)

    flow = request.cookies.get(FLOW_COOKIE, "").split(".")
    state, code = request.query.get("state", ""), request.query.get("code", "")
    if len(flow) != 3 or not state or not hmac.compare_digest(flow[0].encode(), state.encode()):
        record(400, why="state missing or not this browser's")
        return _back_to_viewer("failed")
    if "error" in request.query or not code:
        record(401, why=f"the provider answered {request.query.get('error', 'no code')[:40]}")
        return _back_to_viewer("failed")
    nonce, verifier = flow[1], flow[2]
    try:
        answer = await _exchange(request, sso, code, verifier)
        claims = await sso.verify(answer["id_token"], audience=sso.settings.client_id, nonce=nonce)
        access = answer.get("access_token")
        if isinstance(access, str) and looks_like_jwt(access):  # roles are often only in the access token (Keycloak)
            try:
                access_claims = await sso.verify(access, audience=sso.audience)
            except SsoRefused:
                access_claims = {}
            if access_claims.get("sub") == claims.get("sub"):
                claims = {**access_claims, **claims}
        user = await sso.account(sso.identity(claims))
        if user is None:
            raise SsoRefused("this single sign-on account is disabled at the gateway")
    except ProviderUnreachable as exc:
        log.error("single sign-on callback failed (503): %s", exc)
        record(503, why="the identity provider cannot be reached")
        return _back_to_viewer("unavailable")
    except SsoRefused as exc:
        record(exc.status, why=str(exc))
        return _back_to_viewer("refused" if exc.status == 403 else "failed")
    token = await asyncio.to_thread(request.app[ACCOUNTS].issue_token, user, hours=LOGIN_TOKEN_HOURS, label="sso")
    record(200, user.username, user.role.value)
    response = _redirect("/viewer/", 303)
    response.del_cookie(FLOW_COOKIE, path="/auth/oidc")
    _cookie(response, request, HANDOFF_COOKIE, token, "/auth/oidc/session", HANDOFF_SECONDS)
    return response


async def session(request: web.Request) -> web.Response:
    """The session token of a sign-in just finished, once: the viewer keeps it as it keeps a local login's."""
    token = request.cookies.get(HANDOFF_COOKIE, "")
    user = await asyncio.to_thread(request.app[ACCOUNTS].token_user, token) if token else None
    if user is None:
        raise web.HTTPNotFound(text="no single sign-on session to take")
    response = web.json_response(
        {"token": token, "expires_in": int(LOGIN_TOKEN_HOURS * 3600), "role": user.role.value, "display_name": user.display_name}
    )
    response.del_cookie(HANDOFF_COOKIE, path="/auth/oidc/session")
    return response


def add_routes(app: web.Application) -> None:
    route(app, "GET", "/auth/oidc", status, permission=Permission.PUBLIC)
    route(app, "GET", "/auth/oidc/login", start, permission=Permission.PUBLIC)
    route(app, "GET", "/auth/oidc/callback", callback, permission=Permission.PUBLIC)
    route(app, "POST", "/auth/oidc/session", session, permission=Permission.PUBLIC)
