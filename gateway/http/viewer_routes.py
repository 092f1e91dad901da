"""The web viewer's files at ``/viewer``, and its icon at ``/favicon.ico`` too: public (they hold no patient data),
under a strict Content-Security-Policy."""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

from gateway.http.access import Permission, route
from gateway.http.errors import http_error

CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
FAVICON = "favicon.svg"
SECURITY_HEADERS = {
    # Scripts and styles only from the gateway; images may be blob: URLs of fetched renderings.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str, headers: dict[str, str]) -> web.Response:
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or suffix not in CONTENT_TYPES:
        raise http_error(web.HTTPNotFound, "no such viewer file")
    resource = files("viewer").joinpath(name)
    if not resource.is_file():
        raise http_error(web.HTTPNotFound, "no such viewer file")
    return web.Response(body=resource.read_bytes(), content_type=CONTENT_TYPES[suffix], charset="utf-8", headers=headers)


async def viewer_file(request: web.Request) -> web.Response:
    return _file(request.match_info.get("name") or "index.html", SECURITY_HEADERS)


async def favicon(request: web.Request) -> web.Response:
    """The viewer's icon, where browsers ask for it unprompted (any page of the gateway, the viewer links it)."""
    return _file(FAVICON, {**SECURITY_HEADERS, "Cache-Control": "max-age=86400"})


def add_routes(app: web.Application) -> None:
    for path in ("/viewer", "/viewer/", "/viewer/{name}"):
        route(app, "GET", path, viewer_file, permission=Permission.PUBLIC)  # the viewer's own code: no patient data
    route(app, "GET", "/favicon.ico", favicon, permission=Permission.PUBLIC)
