"""HTTP errors with a JSON reason, and a middleware so that nothing answers with a stack trace."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)


def http_error(kind: type[web.HTTPError], reason: str) -> web.HTTPError:
    return kind(text=json.dumps({"error": reason}), content_type="application/json")


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        raise http_error(web.HTTPInternalServerError, "internal error; see the gateway log") from None
