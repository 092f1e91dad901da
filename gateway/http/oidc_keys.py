"""The identity provider's metadata and signing keys: discovered, fetched with aiohttp, cached, and refetched when
a token names a key the cache lacks (the provider rotated its keys), at most once per ``jwks_min_refetch_seconds``.

Only RS256 (RSA keys) and ES256 (EC P-256 keys) are taken; any other key in the set is left out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from gateway.settings_security import OidcSettings
from gateway.tls import client_context

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "ES256")  # pinned: never none, never HS* (a public key used as an HMAC secret)


class ProviderUnreachable(Exception):
    """The provider's metadata or keys could not be had; the message says why (no token in it)."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str  # one of ALGORITHMS
    key: Any  # a cryptography public key


def _signing_key(jwk: dict[str, Any]) -> SigningKey | None:
    """The key of a JWK if it can verify RS256 or ES256 signatures, else None."""
    if jwk.get("use", "sig") != "sig" or not isinstance(jwk.get("kid", ""), str):
        return None
    kty, alg = jwk.get("kty"), jwk.get("alg")
    algorithm = "RS256" if kty == "RSA" else "ES256" if kty == "EC" and jwk.get("crv") == "P-256" else None
    if algorithm is None or alg not in (None, algorithm):
        return None
    try:
        key = jwt.PyJWK(jwk, algorithm=algorithm).key
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
        return None
    return SigningKey(jwk.get("kid", ""), algorithm, key)


class ProviderKeys:
    """The provider's endpoints (``.well-known/openid-configuration``) and its JWKS, cached for ``jwks_cache_seconds``."""

    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self.issuer = settings.issuer.rstrip("/")
        self.metadata: dict[str, Any] | None = None
        self._keys: dict[str, SigningKey] = {}
        self._fetched = -float("inf")  # time.monotonic() of the last good fetch
        self._tried = -float("inf")  # of the last fetch tried
        self._lock = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None  # a stale set fetched again beside the requests
        self.failing = False  # the last fetch tried failed
        self.last_error = ""
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | None = None

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            if self.issuer.startswith("https:"):
                self._ssl = client_context(ca_file=self.settings.ca_file)
            timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._client().get(url, ssl=self._ssl if self._ssl is not None and url.startswith("https:") else True) as response:
                if response.status != 200:
                    raise ProviderUnreachable(f"the identity provider answered {response.status} for {url}")
                body = json.loads(await response.read())
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            raise ProviderUnreachable(f"the identity provider cannot be reached ({type(exc).__name__})") from None
        if not isinstance(body, dict):
            raise ProviderUnreachable(f"the identity provider's {url} is not a JSON object")
        return body

    async def post_form(self, url: str, form: dict[str, str], auth: aiohttp.BasicAuth | None) -> tuple[int, dict[str, Any]]:
        """POST a form (the code exchange); the status and the JSON answer."""
        try:
            async with self._client().post(url, data=form, auth=auth, ssl=self._ssl if self._ssl is not None and url.startswith("https:") else True) as response:
                body = json.loads(await response.read())
                return response.status, body if isinstance(body, dict) else {}
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            raise ProviderUnreachable(f"the identity provider cannot be reached ({type(exc).__name__})") from None

    async def endpoints(self) -> dict[str, Any]:
        """The provider's metadata; its issuer must be the configured one (OpenID Connect Discovery 1.0, 4.3)."""
        if self.metadata is None:
            metadata = await self.get_json(self.issuer + "/.well-known/openid-configuration")
            if str(metadata.get("issuer", "")).rstrip("/") != self.issuer:
                raise ProviderUnreachable("the identity provider's metadata names another issuer")
            if not isinstance(metadata.get("jwks_uri"), str):
                raise ProviderUnreachable("the identity provider's metadata has no jwks_uri")
            self.metadata = metadata
        return self.metadata

    def cached(self, kid: str) -> SigningKey | None:
        """The key from the cache, without waiting (None when absent or the cache is stale)."""
        if time.monotonic() - self._fetched > self.settings.jwks_cache_seconds:
            return None
        return self._keys.get(kid)

    async def key(self, kid: str) -> SigningKey | None:
        """The signing key ``kid`` (``""``: a token naming none, taken when the set has one key only).

        A key of a stale set still serves at once while the set is fetched again in the background; a key the set
        lacks makes this request wait for a fetch, unless the last was tried under ``jwks_min_refetch_seconds``
        ago. When the provider cannot be reached, the keys of the last set go on serving."""
        found = self.cached(kid)
        if found is not None:
            return found
        if kid in self._keys:  # stale: served, and refreshed beside the request
            if self._refresh is None and self._may_fetch():
                self._refresh = asyncio.create_task(self._refresh_beside())
            return self._keys[kid]
        async with self._lock:
            if kid not in self._keys and self._may_fetch():
                await self._fetch_logged()
            if kid not in self._keys and (self.failing or self._fetched == -float("inf")):
                raise ProviderUnreachable(self.last_error or "the identity provider's keys could not be fetched yet")
        return self._keys.get(kid)

    def _may_fetch(self) -> bool:
        return time.monotonic() - self._tried >= self.settings.jwks_min_refetch_seconds

    async def _fetch_logged(self) -> None:
        """Fetch the set; a failure is logged and leaves the last set in place."""
        self._tried = time.monotonic()
        try:
            await self._fetch()
        except ProviderUnreachable as exc:
            self.failing, self.last_error = True, str(exc)
            log.error("identity provider keys not refreshed (503 for the tokens needing them): %s", exc)
        else:
            self.failing, self.last_error = False, ""

    async def _refresh_beside(self) -> None:
        try:
            await self._fetch_logged()
        finally:
            self._refresh = None

    async def _fetch(self) -> None:
        metadata = await self.endpoints()
        body = await self.get_json(metadata["jwks_uri"])
        keys = [k for k in (_signing_key(j) for j in body.get("keys", []) if isinstance(j, dict)) if k is not None]
        table = {k.kid: k for k in keys}
        if len(keys) == 1:
            table.setdefault("", keys[0])  # a provider with one key may leave kid out of its tokens
        self._keys = table
        self._fetched = time.monotonic()
        log.info("identity provider keys fetched: %d usable", len(keys))
