"""The audit trail of commands run on the gateway's machine (a second factor reset, a pseudonym revealed).

Their events go where the server's go: into the index and, with an audit record repository set
(``audit.syslog_host``), into an audit spool of the command's own, which the command sends before it returns. What
the repository does not take in ``_SEND_SECONDS`` stays spooled, and the gateway sends it at its next start
(worker 0 or the single gateway sends the spools of processes that are not running).
"""

from __future__ import annotations

import asyncio
import getpass
import os
import time
from typing import Any

from gateway.atna.offbox import OffBoxTrail
from gateway.atna.spool import SpoolLocked
from gateway.audit import AuditWriter
from gateway.settings import Settings
from storage.index.accounts import AccountStore

_SEND_SECONDS = 5.0


def operator() -> str:
    """The login name of whoever runs the command, as the audit trail names them."""
    try:
        return getpass.getuser()[:32]
    except (OSError, KeyError):  # no login name in this environment
        return "unknown"


def record(settings: Settings, accounts: AccountStore, digest_key: bytes | None, events: list[dict[str, Any]]) -> int:
    """Write ``events`` to the trail; the number of audit messages still waiting for the repository."""
    try:
        offbox = OffBoxTrail.open(settings, "cli")
    except SpoolLocked:  # another command is sending now: a spool of this run's own
        offbox = OffBoxTrail.open(settings, f"cli-{os.getpid()}")
    writer = AuditWriter(accounts, digest_key, offbox)
    for event in events:
        writer.record(**event)
    return asyncio.run(_write_and_send(writer, offbox))


async def _write_and_send(writer: AuditWriter, offbox: OffBoxTrail | None) -> int:
    await writer.flush()
    if offbox is None:
        return 0
    sending = asyncio.create_task(offbox.send())
    try:
        deadline = time.monotonic() + _SEND_SECONDS
        while offbox.sender.pending and time.monotonic() < deadline and not sending.done():
            await asyncio.sleep(0.05)
        return offbox.sender.pending
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        offbox.close()
