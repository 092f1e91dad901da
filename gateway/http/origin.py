"""What a request's client sees: its scheme and host, for generated URLs and HSTS, taken from one place.

The connection says it (TLS or not, the Host header) unless its peer is one of
``network.trusted_proxies``: then X-Forwarded-Proto (on a plain connection only: a
request that reached the gateway over TLS is HTTPS whatever a header says) and
X-Forwarded-Host, as the nearest proxy wrote them. From anyone else these headers
are ignored, so a client cannot make the gateway write URLs to another host or scheme.
"""

from __future__ import annotations

import re

from aiohttp import web

from gateway.http.keys import SETTINGS
from gateway.proxy_protocol import trusted_proxies

# A host name, IPv4 address or [IPv6] literal, with an optional port: nothing that could end or bend a URL.
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?")


def from_trusted_proxy(request: web.Request) -> bool:
    return trusted_proxies(request.app[SETTINGS].network.trusted_proxies).allows(request.remote or "")


def _nearest(request: web.Request, name: str) -> str:
    """The value the nearest proxy gave: the last one, as each proxy appends its own."""
    values = request.headers.getall(name, ())
    return values[-1].rsplit(",", 1)[-1].strip() if values else ""


def forwarded_host(request: web.Request) -> str:
    """X-Forwarded-Host from a trusted proxy (when well formed), else empty."""
    if not from_trusted_proxy(request):
        return ""
    host = _nearest(request, "X-Forwarded-Host")
    return host if _HOST.fullmatch(host) else ""


def request_scheme(request: web.Request) -> str:
    if request.secure:  # TLS on this very connection
        return "https"
    if "X-Forwarded-Proto" in request.headers and from_trusted_proxy(request):
        proto = _nearest(request, "X-Forwarded-Proto").lower()
        if proto in ("http", "https"):
            return proto
    return "http"


def is_https(request: web.Request) -> bool:
    """The client reached us over HTTPS (ours, or a trusted proxy's): HSTS, and Secure on any cookie."""
    return request_scheme(request) == "https"


def strict_transport_security(request: web.Request, response: web.StreamResponse) -> None:
    """HSTS (RFC 6797) on answers the client got over HTTPS; a browser ignores it over plain HTTP anyway."""
    max_age = request.app[SETTINGS].http.hsts_max_age
    if max_age and is_https(request):
        response.headers["Strict-Transport-Security"] = f"max-age={max_age}"
