"""The audit trail's writer, shared by the HTTP API and the DICOM services (IHE ATNA-like events).

Events are queued and written in batches off the event loop, one transaction
each, so that recording every access costs requests almost nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
import re
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.audit_redaction import clear_key, clear_segment, clear_value, clear_word
from storage.index.accounts import AccountStore

if TYPE_CHECKING:
    from gateway.atna.offbox import OffBoxTrail

log = logging.getLogger(__name__)


# Values are kept in the trail as keyed digests unless they cannot be anyone's data (gateway.audit_redaction), so the
# trail holds no identifier in clear, yet "who looked up patient X" is answered by digesting X the same way
# (``pacs-gateway user audit-digest X``). The key comes from the de-identification secret when the gateway holds one,
# else it is made once and kept in the index (AccountStore.audit_key).


def audit_digest(key: bytes, value: str) -> str:
    return "hmac:" + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:24]


GATHER_SECONDS = 0.1
_PARAMETER = re.compile(r"\{(\w+)\}")  # a route parameter in a route's canonical path


class AuditWriter:
    """Writes audit events in small batches off the event loop; flushed at shutdown.

    With ``offbox`` each batch is also spooled as DICOM Audit Messages, which its sender (run with the writer)
    delivers to the audit record repository (``gateway.atna``)."""

    def __init__(self, accounts: AccountStore, digest_key: bytes | None = None, offbox: OffBoxTrail | None = None) -> None:
        self.accounts = accounts
        self.offbox = offbox
        self.digest_key = digest_key or accounts.audit_key()
        self.queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        self._taken: list[dict[str, object]] = []  # taken off the queue, not written yet

    def digest(self, value: str) -> str:
        return audit_digest(self.digest_key, value) if value else value

    def values(self, pairs: Iterable[tuple[str, str]]) -> str:
        """``key=value&...``, each key and value as a keyed digest unless it cannot be anyone's data."""
        return "&".join(
            f"{key if clear_key(key) else self.digest(key)}={value if clear_value(key, value) else self.digest(value)}"
            for key, value in pairs
        )

    def path(self, request: web.Request) -> str:
        """A request's path as the server routed it: the route's own words, and each route parameter's value when it
        has that parameter's strict form (a UID where ``{study}`` is), else a keyed digest. A path that matched no
        route keeps only the API's own words."""
        info = request.match_info
        resource = info.route.resource
        if resource is None:  # no route: a 404 or 405 before any handler
            return "/".join(s if not s or clear_word(s) else self.digest(s) for s in request.path.split("/"))

        def value(parameter: re.Match[str]) -> str:
            name, text = parameter[1], info.get(parameter[1], "")
            return text if not text or clear_segment(name, text) else self.digest(text)

        return _PARAMETER.sub(value, resource.canonical)

    def target(self, request: web.Request) -> str:
        target = self.path(request) + ("?" + self.values(request.query.items()) if request.query else "")
        return target if len(target) <= 512 else target[:509] + "..."

    def record(self, **event: object) -> None:
        self.queue.put_nowait({"at": dt.datetime.now(dt.timezone.utc), **event})

    async def run(self) -> None:
        sender = asyncio.create_task(self.offbox.send()) if self.offbox is not None else None
        try:
            while True:
                self._taken = [await self.queue.get()]
                # Gather what follows for a moment: under a stream of events (HL7 at hundreds a second) one write
                # a tenth of a second, not one per event, competing with the index's writers.
                await asyncio.sleep(GATHER_SECONDS)
                while not self.queue.empty():
                    self._taken.append(self.queue.get_nowait())
                events, self._taken = self._taken, []
                await asyncio.to_thread(self._write, events)
                if self.offbox is not None:
                    self.offbox.sender.notify()
        finally:
            if sender is not None:  # what it has not sent stays in the spool for the next start
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)

    def _write(self, events: list[dict[str, object]]) -> None:
        try:
            self.accounts.audit(events)
        except Exception as exc:  # an audit write failing must be seen, not crash the writer
            log.error("%d audit event(s) not written: %s", len(events), exc)
        if self.offbox is not None:
            try:
                self.offbox.append(events)
            except Exception as exc:  # the index has them; the repository will miss them, loudly
                log.error("%d audit event(s) not spooled for the audit repository: %s", len(events), exc)

    async def flush(self) -> None:
        """Write what is gathered and queued (at shutdown, once the writer is cancelled); the off-box spool closes,
        keeping what was not sent for the next start."""
        events, self._taken = self._taken, []
        while not self.queue.empty():
            events.append(self.queue.get_nowait())
        if events:
            await asyncio.to_thread(self._write, events)
        if self.offbox is not None:
            self.offbox.close()


def cleanup_context(writer: AuditWriter):  # noqa: ANN201 - an aiohttp cleanup context
    """Runs the writer while the application runs, and flushes what is queued when it stops."""

    async def context(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(writer.run())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await writer.flush()

    return context
