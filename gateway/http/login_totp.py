"""The second step of ``POST /auth/login`` for local accounts: a TOTP code, or enrolment (``gateway.totp``).

Asked of administrators always, and of everyone whose address (``gateway.http.client``: the socket's peer, or the
X-Forwarded-For hop a trusted proxy names) is outside ``login.trusted_networks``. It runs only once the password
was right, within the same login attempt, so the login throttle counts code guesses as it counts passwords: an
attempt's count is given back only when the whole login succeeds. A login needing a code and sent none, or a wrong
one, is answered 401 with ``second_factor``: ``"totp"`` (send ``code`` or ``recovery_code`` with the password) or
``"enrol"`` (with ``enrolment``: the secret, its otpauth:// URI and a QR code of it; log in again with the first
code of it to confirm it, and receive the recovery codes once). Every step is in the audit trail.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from typing import Any

import segno
from aiohttp import web

from gateway.peers import PeerAllowList
from gateway.settings_sections import SettingsError
from gateway.totp import Check, Enrolment, SecondFactor, Verdict
from storage.index.accounts import Role, User


class SecondFactorLogin:
    """Who needs a second factor, and the check of it."""

    def __init__(self, factor: SecondFactor, trusted_networks: list[str]) -> None:
        try:
            self.trusted = PeerAllowList(trusted_networks, when_empty="nobody")
        except ValueError as exc:
            raise SettingsError(f"login.trusted_networks: {exc}") from None
        self.factor = factor

    def needed(self, user: User, address: str) -> bool:
        return user.role is Role.ADMIN or not self.trusted.allows(address)


SECOND_FACTOR = web.AppKey("second_factor", SecondFactorLogin)

_AUDITED = {
    Verdict.CONFIRMED: ("totp-confirmed", 200),
    Verdict.RECOVERY_USED: ("recovery-code-used", 200),
    Verdict.WRONG_CODE: ("totp-failed", 401),
    Verdict.REPLAYED: ("totp-failed", 401),
    Verdict.WRONG_RECOVERY: ("recovery-code-failed", 401),
    Verdict.UNREADABLE: ("totp-failed", 401),
}
_REFUSED = {
    Verdict.CODE_NEEDED: "this login needs the code of your authenticator app (or a recovery code)",
    Verdict.ENROL: "this account needs a second factor: add the key to an authenticator app, then log in with its first code",
    Verdict.WRONG_CODE: "wrong code",
    Verdict.REPLAYED: "that code was used already: wait for the next one",
    Verdict.WRONG_RECOVERY: "wrong or already used recovery code",
    Verdict.UNREADABLE: "this account's second factor cannot be read: ask an administrator to reset it",
}


def qr_svg(text: str) -> str:
    out = io.BytesIO()
    segno.make_qr(text, error="m").save(out, kind="svg", scale=4, border=4, title="TOTP")
    return out.getvalue().decode("utf-8")


def _enrolment(enrolment: Enrolment) -> dict[str, str]:
    return {
        "secret": enrolment.secret, "otpauth_uri": enrolment.uri, "issuer": enrolment.issuer,
        "account": enrolment.account, "qr_svg": qr_svg(enrolment.uri),
    }  # fmt: skip


async def second_step(request: web.Request, user: User, body: dict[str, Any], address: str, record: Callable[..., None]) -> dict[str, Any]:
    """What the login answer adds (recovery codes) once the second factor passed; raises 401 when it did not."""
    login = request.app[SECOND_FACTOR]
    if not login.needed(user, address):
        return {}
    code, recovery = str(body.get("code") or ""), str(body.get("recovery_code") or "")
    check: Check = await asyncio.to_thread(login.factor.check, user, code=code, recovery_code=recovery)
    role = user.role.value
    if check.verdict is Verdict.ENROL:
        record("totp-enrolled", 401, role=role, target="/auth/login enrolment pending")
    audited = _AUDITED.get(check.verdict)
    if audited is not None:
        record(audited[0], audited[1], role=role, target=f"/auth/login {check.verdict.value}")
    if check.verdict.admits:
        extra: dict[str, Any] = {}
        if check.recovery_codes:
            extra["recovery_codes"] = list(check.recovery_codes)
        if check.recovery_codes_left is not None:
            extra["recovery_codes_left"] = check.recovery_codes_left
        return extra
    record("login", 401, role=role)
    answer: dict[str, Any] = {"error": _REFUSED[check.verdict], "second_factor": "enrol" if check.enrolment else "totp"}
    if check.enrolment is not None:
        answer["enrolment"] = _enrolment(check.enrolment)
    raise web.HTTPUnauthorized(text=json.dumps(answer), content_type="application/json")
