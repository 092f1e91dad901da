"""Typed application state of the HTTP server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from gateway.audit import AuditWriter
from gateway.http.tokens import Tokens
from gateway.ingest.service import IngestService
from gateway.ingest.spool import SpoolLog
from gateway.metrics import GatewayMetrics
from gateway.query.qido import QidoService
from gateway.reporting.service import ReportingService
from gateway.settings import DicomSettings, Settings
from gateway.vault import PseudonymVault
from storage.index.accounts import AccountStore
from storage.index.database import IndexDatabase
from storage.index.instance_locations import InstanceLocations
from storage.index.shares import ShareStore
from storage.object_store.base import ObjectStore


class DicomListener(Protocol):
    """What HTTP shows of the DICOM listener (in /health), without depending on the DIMSE adapter."""

    settings: DicomSettings
    plain: bool  # listening on the plain port (else on the TLS port only)

    @property
    def port(self) -> int: ...

    @property
    def tls_port(self) -> int | None: ...

    @property
    def active(self) -> int: ...


SETTINGS = web.AppKey("settings", Settings)
INDEX = web.AppKey("index", IndexDatabase)
OBJECT_STORE = web.AppKey("object_store", ObjectStore)
SPOOL = web.AppKey("spool", SpoolLog)
DICOM: web.AppKey[DicomListener] = web.AppKey("dicom")
INGEST = web.AppKey("ingest", IngestService)
METRICS = web.AppKey("metrics", GatewayMetrics)
# Returns the spool worker's last error, or None while storing works.
WORKER_ERROR: web.AppKey[Callable[[], Any]] = web.AppKey("worker_error")
# The pseudonym vault, or None when the gateway holds no de-identification secret.
VAULT: web.AppKey[PseudonymVault | None] = web.AppKey("vault")
ACCOUNTS = web.AppKey("accounts", AccountStore)
AUDIT = web.AppKey("audit", AuditWriter)
TOKENS = web.AppKey("tokens", Tokens)
REPORTING = web.AppKey("reporting", ReportingService)
SHARES = web.AppKey("shares", ShareStore)
QUERIES = web.AppKey("queries", QidoService)
LOCATIONS = web.AppKey("locations", InstanceLocations)
