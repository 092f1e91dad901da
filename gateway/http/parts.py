"""multipart/related answers of DICOMweb retrieves, and parts made ahead so a failure is known before the status.

An answer's status and headers go before its body. When some parts need work
that can fail (decoding to another transfer syntax, rendering), that work is
done first: the parts go to an anonymous temporary file (in memory while small),
the ones that failed are left out and named in a ``Warning`` header (PS3.18
8.1.2.2, RFC 7234 format), and when every part failed the client gets the
failure itself instead of a 200 with nothing in it.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SPOOL_IN_MEMORY = 32 << 20  # bytes of prepared parts kept in memory; more goes to an anonymous file


class Multipart:
    """A streamed multipart/related answer."""

    def __init__(self, request: web.Request, part_type: str, transfer_syntax: str | None = None) -> None:
        self.boundary = uuid.uuid4().hex
        self.part_type = part_type
        self.response = web.StreamResponse()
        content_type = f'multipart/related; type="{part_type}"; boundary={self.boundary}'
        if transfer_syntax and transfer_syntax != "*":
            content_type += f"; transfer-syntax={transfer_syntax}"
        self.response.headers["Content-Type"] = content_type
        self.request = request

    async def start(self, headers: dict[str, str] | None = None) -> None:
        self.response.headers.update(headers or {})
        await self.response.prepare(self.request)

    async def part(self, body: bytes, part_type: str | None = None, transfer_syntax: str | None = None) -> None:
        header = f"Content-Type: {part_type or self.part_type}"
        if transfer_syntax:
            header += f"; transfer-syntax={transfer_syntax}"
        await self.response.write(f"--{self.boundary}\r\n{header}\r\n\r\n".encode() + body + b"\r\n")

    async def finish(self) -> web.StreamResponse:
        await self.response.write(f"--{self.boundary}--\r\n".encode())
        await self.response.write_eof()
        return self.response


def warning(request: web.Request, text: str) -> str:
    """A ``Warning`` header value: ``299 <agent> "<text>"`` (RFC 7234 5.5)."""
    agent = (request.host or "pacs-gateway").split(",")[0].strip() or "pacs-gateway"
    return f'299 {agent} "{text.replace(chr(34), chr(39))}"'


@dataclass
class PreparedParts:
    """Parts made ahead, in order: each one's extra (e.g. its transfer syntax) and its place in a temporary file."""

    spool: Any = field(default_factory=lambda: tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY))
    places: list[tuple[Any, int, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # why each failed part failed

    def add(self, body: bytes, extra: Any = None) -> None:
        start = self.spool.tell()
        self.spool.write(body)
        self.places.append((extra, start, len(body)))

    def _read(self, start: int, length: int) -> bytes:
        self.spool.seek(start)
        return self.spool.read(length)

    async def __aiter__(self) -> AsyncIterator[tuple[bytes, Any]]:
        """Each part and its extra, in order; read off the event loop (past SPOOL_IN_MEMORY the parts are on disk)."""
        for extra, start, length in self.places:
            yield await asyncio.to_thread(self._read, start, length), extra

    def close(self) -> None:
        self.spool.close()


Make = Callable[[Any], Awaitable[tuple[bytes, Any]]]


async def prepare(rows: list[Any], make: Make, failed: type[Exception] | tuple[type[Exception], ...]) -> PreparedParts:
    """Make every row's part with ``make``; those raising ``failed`` are left out, with their reasons."""
    prepared = PreparedParts()
    try:
        for row in rows:
            try:
                body, extra = await make(row)
            except failed as exc:
                prepared.failures.append(str(exc))
                continue
            await asyncio.to_thread(prepared.add, body, extra)
    except BaseException:
        prepared.close()
        raise
    return prepared
