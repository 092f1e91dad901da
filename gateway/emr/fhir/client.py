"""A small FHIR R4 REST client on one aiohttp session: search, conditional update and conditional create.

The session's connector carries the TLS context of ``fhir.tls_*`` (the server's
certificate checked against the CA bundle, its host name matched, a client
certificate shown when configured); TLS failures name the TLS library's reason.
Errors name the interaction and the HTTP status, with the OperationOutcome's
issue codes and element paths, never its free text or the query: those can
carry identifiers.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiohttp

from gateway.emr.errors import DeliveryError

FHIR_JSON = "application/fhir+json"


def _issues(body: Any) -> str:
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ""
    parts = []
    for issue in body.get("issue", [])[:3]:
        where = ",".join(str(e) for e in (issue.get("expression") or [])[:2])
        parts.append(f"{issue.get('code', '?')}" + (f" at {where}" if where else ""))
    return "; ".join(parts)


def _tls_failure(exc: BaseException) -> str:
    """"TLS failed (reason)" when the error comes from TLS after the handshake, e.g. the server's alert that it
    wants a client certificate (TLS 1.3 sends it only then); "" otherwise."""
    for cause in (exc, exc.__cause__, exc.__context__):
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed ({cause.reason or type(cause).__name__})"
    text = str(exc)
    if "[SSL: " in text:  # aiohttp re-raises an SSLError lost on a connection as a ClientOSError of its text
        return f"TLS failed ({text.split('[SSL: ', 1)[1].split(']', 1)[0]})"
    return ""


class FhirClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, *, token: str = "", timeout: float = 10.0) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.headers = {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON + "; charset=utf-8"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    async def search(self, resource_type: str, params: dict[str, str], *, count: int = 2) -> list[dict[str, Any]]:
        """Matching resources (``search.mode`` match), at most ``count``. Searched by POST (``type/_search``,
        form-encoded): the identifiers searched by (MRN, citizen ID) stay out of URLs and access logs."""
        query = {**params, "_count": str(count)}
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        body = await self._call("POST", f"{resource_type}/_search", f"search {resource_type}", data=query, headers=form)
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            raise DeliveryError(f"FHIR search {resource_type}: the answer is not a Bundle", permanent=True)
        return [
            entry["resource"]
            for entry in body.get("entry", [])
            if "resource" in entry and entry.get("search", {}).get("mode", "match") == "match"
        ]

    async def update_where(self, resource_type: str, params: dict[str, str], resource: dict[str, Any]) -> dict[str, Any]:
        """Conditional update (``PUT type?params``): creates the resource, or replaces the one match."""
        return await self._call("PUT", resource_type, f"PUT {resource_type}", params=params, json=resource)

    async def create_unless(self, resource_type: str, condition: str, resource: dict[str, Any]) -> dict[str, Any]:
        """Conditional create (``If-None-Exist``): the existing resource when one matches."""
        return await self._call(
            "POST", resource_type, f"POST {resource_type}", json=resource, headers={"If-None-Exist": condition}
        )

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        if method in ("PUT", "POST"):
            headers["Prefer"] = "return=representation"
        try:
            for attempt in (1, 2):
                try:
                    async with self.session.request(
                        method, f"{self.base_url}/{path}", headers=headers, timeout=self.timeout, **kwargs
                    ) as response:
                        status = response.status
                        try:
                            body = await response.json(content_type=None)
                        except (ValueError, aiohttp.ContentTypeError):
                            body = None
                    break
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                    # A kept-alive connection the server had closed while idle: once more on a new one. Every
                    # interaction here is safe to repeat (searches, conditional update and create).
                    if attempt == 2:
                        raise
        except asyncio.TimeoutError:
            raise DeliveryError(f"FHIR {what}: no answer within {self.timeout.total:g} s", unavailable=True) from None
        except aiohttp.ClientConnectorCertificateError as exc:  # the server's certificate: wrong CA, wrong host name
            cause = exc.certificate_error
            reason = getattr(cause, "verify_message", "") or getattr(cause, "reason", "") or type(cause).__name__
            raise DeliveryError(f"FHIR {what}: TLS certificate of the server not accepted ({reason})", unavailable=True) from None
        except aiohttp.ClientSSLError as exc:  # e.g. the server wants a client certificate we do not show
            reason = getattr(exc.os_error, "reason", "") or type(exc.os_error).__name__
            raise DeliveryError(f"FHIR {what}: TLS handshake failed ({reason})", unavailable=True) from None
        except aiohttp.ClientError as exc:
            tls = _tls_failure(exc)
            raise DeliveryError(f"FHIR {what}: {tls or type(exc).__name__}", unavailable=True) from None
        if status >= 400:
            detail = _issues(body)
            message = f"FHIR {what}: HTTP {status}" + (f" ({detail})" if detail else "")
            retryable = status >= 500 or status in (408, 429)
            raise DeliveryError(message, permanent=not retryable, unavailable=retryable)
        if method in ("PUT", "POST") and not path.endswith("/_search") and not (isinstance(body, dict) and body.get("id")):
            raise DeliveryError(f"FHIR {what}: HTTP {status} without the resource", permanent=True)
        return body
