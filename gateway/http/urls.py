"""The gateway's own absolute URLs (Retrieve URL, BulkDataURI, share links), as clients must call them."""

from __future__ import annotations

from aiohttp import web

from gateway.http.keys import SETTINGS
from gateway.http.origin import forwarded_host, request_scheme


def public_base(request: web.Request) -> str:
    """``http.public_url`` when set (behind a proxy); else the host the client used, with the port it connected to:
    X-Forwarded-Host and -Proto count only from a trusted proxy (``gateway.http.origin``)."""
    public = request.app[SETTINGS].http.public_url.rstrip("/")
    if public:
        return public
    scheme = request_scheme(request)
    host = forwarded_host(request)
    if not host:
        host = request.host
        if ":" not in host.rsplit("]", 1)[-1]:  # some clients send Host without the port
            sockname = request.transport.get_extra_info("sockname") if request.transport else None
            if sockname and sockname[1] != (443 if scheme == "https" else 80):
                host = f"{host}:{sockname[1]}"
    return f"{scheme}://{host}"


def dicomweb_base(request: web.Request) -> str:
    return f"{public_base(request)}/dicom-web"
