"""``POST /auth/login``: a bearer token for a user name and password, with failed logins throttled.

Every answer but a success costs the same: an unknown user name runs the
same scrypt work as a wrong password (storage.index.accounts), and the
throttle counts names whether an account has them or not. After repeated
failures for one name or from one address (storage.index.login_throttle),
logins are answered 429 with Retry-After, the right password included,
until the lockout ends. Every attempt is in the audit trail (``login``, its
HTTP status), and so is every lockout (``login-lockout``). Administrators, and logins from outside
``login.trusted_networks``, need a TOTP code too (``gateway.http.login_totp``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math

from aiohttp import web

from gateway.http.client import client_address
from gateway.http.errors import http_error
from gateway.http.keys import ACCOUNTS, AUDIT, METRICS
from gateway.http.login_totp import second_step
from storage.index.login_throttle import Lockout, LoginThrottle

log = logging.getLogger(__name__)

LOGIN_TOKEN_HOURS = 12.0
THROTTLE = web.AppKey("login_throttle", LoginThrottle)


def _locked_out(lockout: Lockout) -> web.HTTPTooManyRequests:
    seconds = max(1, math.ceil(lockout.seconds))
    return web.HTTPTooManyRequests(
        text=json.dumps({"error": f"too many failed logins: try again in {seconds} s"}),
        content_type="application/json",
        headers={"Retry-After": str(seconds)},
    )


async def logout(request: web.Request) -> web.Response:
    """Revoke the token the request is made with: it stops working at once, in every gateway process."""
    token = request.headers.get("Authorization", "")[7:].strip()
    await asyncio.to_thread(request.app[ACCOUNTS].revoke_token, token)
    return web.Response(status=204)


async def login(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        username, password = str(body["username"]), str(body["password"])
    except (ValueError, KeyError, TypeError):
        raise http_error(web.HTTPBadRequest, 'send {"username": ..., "password": ...} as JSON') from None
    accounts, audit, throttle = request.app[ACCOUNTS], request.app[AUDIT], request.app[THROTTLE]
    address = client_address(request)

    # A name no account has is kept as a digest: a password typed into the name field stays out of the trail.
    known = await asyncio.to_thread(accounts.user, username) is not None
    shown = username[:64] if known else audit.digest(username)

    def record(action: str, outcome: int, role: str = "", target: str = "/auth/login") -> None:
        audit.record(username=shown, role=role, action=action, target=target, source=address, outcome=outcome)

    attempt = await asyncio.to_thread(throttle.attempt, username, address)  # counted before the password is checked
    for lock in attempt.started:
        record("login-lockout", 429, target=f"/auth/login {lock.scope} locked {lock.seconds:g} s")
        request.app[METRICS].logins_locked.labels(lock.scope).inc()
        where = {"pair": f"to one account name from {address}", "address": f"from {address}"}.get(lock.scope, "to one account name")
        log.warning("logins %s locked for %g s after repeated failures (see the audit trail)", where, lock.seconds)
    if attempt.refused is not None:
        record("login", 429)
        raise _locked_out(attempt.refused)
    user = await asyncio.to_thread(accounts.authenticate, username, password)
    if user is None:
        record("login", 401)
        raise http_error(web.HTTPUnauthorized, "unknown user or wrong password")
    extra = await second_step(request, user, body, address, record)  # a TOTP code where needed (gateway.http.login_totp)
    await asyncio.to_thread(throttle.succeeded, username, address)
    record("login", 200, role=user.role.value)
    token = await asyncio.to_thread(accounts.issue_token, user, hours=LOGIN_TOKEN_HOURS, label="login")
    answer = {"token": token, "expires_in": int(LOGIN_TOKEN_HOURS * 3600), "role": user.role.value, "display_name": user.display_name}
    answer.update(extra)
    return web.json_response(answer)
