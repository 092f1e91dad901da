"""The audit trail off the box for one gateway process: each event spooled as a syslog message, then sent.

Every process that records audit events (the single gateway, each supervisor worker, the HL7 process) has a
spool of its own, ``<data dir>/audit-spool/<process>``, and one sender: its events reach the repository in
the order it recorded them, numbered by its own ``sequenceId``, with no lock shared between processes.
Events of different processes are ordered by their times only.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.atna.message import AuditSource, audit_message
from gateway.atna.sender import AuditSender
from gateway.atna.spool import AuditSpool, SpoolLocked
from gateway.atna.syslog import syslog_message
from gateway.settings import Settings, SettingsError
from gateway.tls import TlsConfigError, check_private_file, client_context

log = logging.getLogger(__name__)


def spool_directory(settings: Settings, process: str) -> Path:
    return settings.data_path / "audit-spool" / process


class OffBoxTrail:
    """One process's audit messages on their way to the audit record repository: a spool and its sender."""

    def __init__(self, spool: AuditSpool, sender: AuditSender, source: AuditSource) -> None:
        self.spool = spool
        self.sender = sender
        self.source = source
        self._closed = False

    @classmethod
    def open(cls, settings: Settings, process: str, *, others: frozenset[str] = frozenset()) -> OffBoxTrail | None:
        """None when no repository is set (``audit.syslog_host`` empty); a bad setting stops start-up.

        ``others`` names the other processes of this run, when this one is to send the spools of processes not
        running any more (the single gateway, or worker 0): any spool there but ours and theirs."""
        audit = settings.audit
        if not audit.syslog_host:
            return None
        if not 0 < audit.syslog_port < 65536:
            raise SettingsError(f"audit.syslog_port must be a TCP port, got {audit.syslog_port}")
        if audit.confirm_seconds < 0 or audit.retry_max_seconds <= 0:
            raise SettingsError("audit.confirm_seconds must be 0 or more and audit.retry_max_seconds more than 0")
        try:
            if audit.key_file:
                check_private_file(audit.key_file, "audit.key_file")
            context = client_context(
                ca_file=audit.ca_file, cert_file=audit.cert_file, key_file=audit.key_file, what="audit repository"
            )
        except TlsConfigError as exc:
            raise SettingsError(str(exc)) from None
        host = socket.gethostname() or "localhost"
        source = AuditSource(
            source_id=audit.source_id or host, enterprise_site_id=audit.enterprise_site_id, host=host,
            process=process, ae_title=settings.dicom.ae_title,
        )  # fmt: skip
        spool = AuditSpool(spool_directory(settings, process))
        leftovers = _leftovers(settings, {process, *others}) if others or process == "gateway" else []
        sender = AuditSender(
            spool, audit.syslog_host, audit.syslog_port, context, leftovers=leftovers,
            confirm_seconds=audit.confirm_seconds, retry_max_seconds=audit.retry_max_seconds,
        )  # fmt: skip
        if sender.pending:
            log.info("%d audit message(s) of an earlier run wait to be sent to the audit repository", sender.pending)
        return cls(spool, sender, source)

    def _message(self, event: dict[str, Any], number: int) -> bytes:
        when = event.get("at")
        when = when if isinstance(when, dt.datetime) else dt.datetime.now(dt.timezone.utc)
        payload = audit_message({**event, "at": when}, self.source)
        return syslog_message(payload, when=when, host=self.source.host, process=self.source.process, number=number)

    def append(self, events: Sequence[dict[str, Any]]) -> None:
        """Spool the events' messages, on disk when this returns (blocks: call it off the event loop)."""
        self.spool.append(events, self._message)

    async def send(self) -> None:
        await self.sender.run()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.spool.close()
            for leftover in self.sender.leftovers:
                leftover.close()


def _leftovers(settings: Settings, running: set[str]) -> list[AuditSpool]:
    """The spools of processes that are not part of this run (a worker count lowered, one process turned into
    several or back) and still hold messages; each is kept (its numbers go on if its process comes back)."""
    out = []
    root = settings.data_path / "audit-spool"
    for directory in sorted(root.iterdir()) if root.is_dir() else ():
        if directory.name in running or not directory.is_dir():
            continue
        try:
            spool = AuditSpool(directory)
        except SpoolLocked:  # in use after all: its process sends it
            continue
        if spool.pending:
            out.append(spool)
        else:
            spool.close()
    return out
