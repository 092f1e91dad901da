"""Where an HTTP request comes from, for the audit trail, the login throttle and STOW-RS: one answer everywhere.

The socket's peer, unless it is one of ``network.trusted_proxies`` (the balancer, ``option forwardfor``): then the
rightmost X-Forwarded-For hop that is not a trusted proxy (``gateway.proxy_protocol.forwarded_client``).
"""

from __future__ import annotations

from aiohttp import web

from gateway.http.keys import SETTINGS
from gateway.proxy_protocol import forwarded_client, trusted_proxies


def client_address(request: web.Request) -> str:
    remote = request.remote or ""
    trusted = trusted_proxies(request.app[SETTINGS].network.trusted_proxies)
    return forwarded_client(remote, request.headers.getall("X-Forwarded-For", ()), trusted)
