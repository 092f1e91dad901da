"""OpenID Connect access tokens as bearer tokens: verified against the provider's keys, mapped to a gateway user.

A token is taken when it is a JWT signed RS256 or ES256 by a key the provider publishes, names the configured
issuer and audience, and is inside its ``nbf``..``exp`` (give or take ``oidc.leeway_seconds``). Its roles claim is
mapped to the gateway's roles (``oidc.role_map``): none mapped is a 403. The user is the single sign-on account of
its issuer and subject (storage.index.sso_accounts), made or brought up to date from its claims. The first request
with each token is recorded as an ``sso-login``, and so is each refused token, like local logins.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from typing import Any

import jwt
from aiohttp import web

from gateway.audit import AuditWriter
from gateway.http.client import client_address
from gateway.http.oidc_keys import ALGORITHMS, ProviderKeys, ProviderUnreachable
from gateway.settings_security import OidcSettings
from storage.index.accounts import Role, User
from storage.index.sso_accounts import SsoAccounts, SsoIdentity

# The most powerful role wins when a token maps to several.
_RANK = (Role.ADMIN, Role.RADIOLOGIST, Role.AUDITOR, Role.REFERRING)
# An account brought up to date is trusted again without the index for this long: a local disabling shuts an SSO
# user out within that time; a change of role or patients at the provider takes effect with the next token.
_ACCOUNT_SECONDS = 30.0
_MOST_REMEMBERED = 10_000


class SsoRefused(Exception):
    """A single sign-on token not taken; ``status`` is the HTTP answer (401 or 403), the message says why."""

    status = 401


class NoMappedRole(SsoRefused):
    status = 403


def looks_like_jwt(token: str) -> bool:
    """A compact JWS (``header.payload.signature``, its header JSON starting ``{"``); gateway tokens never are."""
    return token.startswith("eyJ") and token.count(".") == 2


def claim(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (``realm_access.roles``), or None; a claim whose own name has dots is found too."""
    if not path:
        return None
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


class OidcTokens:
    """Verifies the provider's JWTs and maps them to gateway users (see the module's docstring)."""

    def __init__(self, settings: OidcSettings, keys: ProviderKeys, accounts: SsoAccounts, audit: AuditWriter) -> None:
        self.settings = settings
        self.keys = keys
        self.accounts = accounts
        self.audit = audit
        self.roles = settings.role_table()
        issuer = settings.issuer.rstrip("/")
        self.issuers = [issuer, issuer + "/"]
        self.audience = settings.audience or settings.client_id
        self._accounts: dict[tuple[Any, ...], tuple[User | None, float]] = {}
        self._seen: set[str] = set()  # digests of tokens already recorded as sign-ins

    async def verify(self, token: str, *, audience: str, nonce: str | None = None) -> dict[str, Any]:
        """The token's claims once its signature, issuer, audience and times hold; raises SsoRefused with the reason."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise SsoRefused("the bearer token is not a well-formed JWT") from None
        algorithm, kid = header.get("alg"), header.get("kid", "")
        if algorithm not in ALGORITHMS:
            raise SsoRefused(f"the token is signed with {str(algorithm)[:16]!r}: only RS256 and ES256 are accepted")
        if not isinstance(kid, str):
            raise SsoRefused("the token's kid is not a string")
        try:
            key = await self.keys.key(kid)
        except ProviderUnreachable:
            raise SsoRefused("the identity provider cannot be reached and the token's key is not cached: try again later") from None
        if key is None:
            raise SsoRefused("the token is signed with a key the identity provider does not publish")
        if key.algorithm != algorithm:
            raise SsoRefused(f"the token's key is for {key.algorithm}, not {algorithm}")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=[algorithm], audience=audience, issuer=self.issuers,
                leeway=self.settings.leeway_seconds, options={"require": ["exp", "iss", "aud", "sub"]},
            )  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise SsoRefused("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise SsoRefused("the token is not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise SsoRefused("the token is meant for another audience") from None
        except jwt.InvalidIssuerError:
            raise SsoRefused("the token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise SsoRefused("the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise SsoRefused(f"the token has no {exc.claim} claim") from None
        except jwt.InvalidTokenError:
            raise SsoRefused("the bearer token is not a valid JWT") from None
        if nonce is not None and claims.get("nonce") != nonce:
            raise SsoRefused("the ID token's nonce is not the sign-in's")
        return claims

    def identity(self, claims: Mapping[str, Any]) -> SsoIdentity:
        """Who the claims name, with the gateway role their provider roles map to; raises NoMappedRole."""
        mapped = {Role(self.roles[r]) for r in _strings(claim(claims, self.settings.roles_claim)) if r in self.roles}
        if not mapped:
            raise NoMappedRole("none of the token's roles is mapped to a gateway role (oidc.role_map)")
        role = next(r for r in _RANK if r in mapped)
        patients = None
        if self.settings.patients_claim:
            patients = tuple(_strings(claim(claims, self.settings.patients_claim)))
        subject = str(claims["sub"])
        username = claim(claims, self.settings.username_claim)
        display = claim(claims, self.settings.display_name_claim)
        return SsoIdentity(
            issuer=str(claims["iss"]).rstrip("/"), subject=subject,
            username=username if isinstance(username, str) and username else subject,
            display_name=display if isinstance(display, str) else "", role=role, patients=patients,
        )  # fmt: skip

    async def account(self, identity: SsoIdentity) -> User | None:
        """The identity's account, made or brought up to date when its claims changed or a while has passed."""
        now = time.monotonic()
        remembered = self._accounts.get(_fingerprint(identity))
        if remembered is not None and remembered[1] > now:
            return remembered[0]
        user = await asyncio.to_thread(self.accounts.sign_in, identity)
        if len(self._accounts) >= _MOST_REMEMBERED:
            self._accounts.clear()
        self._accounts[_fingerprint(identity)] = (user, now + _ACCOUNT_SECONDS)
        return user

    looks_like = staticmethod(looks_like_jwt)

    async def user(self, token: str, request: web.Request | None) -> User:
        """The user of an access token; raises SsoRefused (401, 403), recorded as a refused ``sso-login``."""
        try:
            claims = await self.verify(token, audience=self.audience)
            # An ID token proves a sign-in to the client, no more: Keycloak marks it with typ ID, and any provider's
            # carries the sign-in's nonce or the hash of its access token, which an access token never does.
            if claims.get("typ") == "ID" or "nonce" in claims or "at_hash" in claims:
                raise SsoRefused("an ID token is not an access token")
            identity = self.identity(claims)
            user = await self.account(identity)
            if user is None:
                raise SsoRefused("this single sign-on account is disabled at the gateway")
        except SsoRefused as exc:
            self._record(request, "", "", exc.status, "/auth/bearer " + str(exc)[:200])
            raise
        digest = hashlib.sha256(token.encode()).hexdigest()
        if digest not in self._seen:  # a token's first use is its sign-in; each later request is audited as usual
            if len(self._seen) >= _MOST_REMEMBERED:
                self._seen.clear()
            self._seen.add(digest)
            self._record(request, user.username, user.role.value, 200, "/auth/bearer")
        return user

    def _record(self, request: web.Request | None, username: str, role: str, outcome: int, target: str) -> None:
        source = client_address(request) if request is not None else ""
        self.audit.record(username=username, role=role, action="sso-login", target=target, source=source, outcome=outcome)


def _fingerprint(identity: SsoIdentity) -> tuple[Any, ...]:
    return (identity.issuer, identity.subject, identity.username, identity.display_name, identity.role, identity.patients)
