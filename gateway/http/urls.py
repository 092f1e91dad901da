"""The gateway's own absolute URLs (Retrieve URL, BulkDataURI, share links), as clients must call them."""

from __future__ import annotations

from aiohttp import web

from gateway.http.keys import SETTINGS


def public_base(request: web.Request) -> str:
    """``http.public_url`` when set (behind a proxy); else the Host the client used, with the port it connected to."""
    public = request.app[SETTINGS].http.public_url.rstrip("/")
    if public:
        return public
    host = request.host
    if ":" not in host.rsplit("]", 1)[-1]:  # some clients send Host without the port
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if sockname and sockname[1] not in (80, 443):
            host = f"{host}:{sockname[1]}"
    return f"{request.scheme}://{host}"


def dicomweb_base(request: web.Request) -> str:
    return f"{public_base(request)}/dicom-web"
