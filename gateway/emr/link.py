"""The EMR link of one gateway process: its HTTP session, destinations, outbox worker and stable-study publisher.

Nothing runs when no destination is configured (``fhir.base_url`` and
``hl7.outbound_host`` empty): messages then wait in the outbox. The publisher
and the worker are tasks of their own, so the EMR being slow or down never
holds up receiving or storing instances. In a cluster (``member``) every
process's worker claims messages for a lease, and one process of the site
scans for stable studies: the holder of the site lease ``stable-study-scan``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import aiohttp

from gateway.cluster import ClusterMember
from gateway.emr.fhir.client import FhirClient
from gateway.emr.fhir.destination import FhirDestination
from gateway.emr.oru_delivery import OruDestination, hl7_settings
from gateway.emr.outbox_worker import Destination, OutboxWorker
from gateway.emr.publisher import StablePublisher
from gateway.metrics import GatewayMetrics
from gateway.settings import Settings
from gateway.vault import PseudonymVault
from storage.index.database import IndexDatabase
from storage.index.outbox import Outbox
from storage.index.reconciliation import ReconciliationQueue
from storage.index.study_publications import StudyPublications

log = logging.getLogger(__name__)

SCAN_LEASE = "stable-study-scan"  # the site lease of the one process that looks for stable studies


def wado_url(settings: Settings) -> str:
    """The DICOMweb base URL the EMR's users reach, for the Endpoint resource."""
    if settings.fhir.public_wado_url:
        return settings.fhir.public_wado_url.rstrip("/")
    if settings.http.public_url:
        return settings.http.public_url.rstrip("/") + "/dicom-web"
    url = f"http://{socket.getfqdn()}:{settings.http.port}/dicom-web"
    log.warning("neither fhir.public_wado_url nor http.public_url is set; the EMR's Endpoint says %s", url)
    return url


class EmrLink:
    def __init__(
        self,
        settings: Settings,
        index: IndexDatabase,
        vault: PseudonymVault | None,
        metrics: GatewayMetrics,
        member: ClusterMember | None = None,
    ) -> None:
        self.settings = settings
        self.member = member  # the cluster: the worker's lease holder, the stable-study scan's site lease
        self.index = index
        self.vault = vault
        self.metrics = metrics
        self.fhir_token = settings.fhir.bearer_token()  # a missing token file stops the start, not the first delivery
        self.hl7 = hl7_settings(settings)
        # TLS files are read now: a wrong CA bundle, certificate or key stops the start, not the first delivery.
        self.fhir_tls = settings.fhir.tls_context() if settings.fhir.base_url else None
        self.oru_tls = self.hl7.outbound_tls_context() if self.hl7 else None
        self.outbox = Outbox(index.engine)
        self.worker: OutboxWorker | None = None
        self.publisher: StablePublisher | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        if member is not None and self.enabled and settings.fhir.base_url:
            member.want(SCAN_LEASE)

    @property
    def enabled(self) -> bool:
        return bool(self.settings.fhir.base_url or self.hl7)

    async def start(self) -> None:
        if not self.enabled:
            return
        fhir = self.settings.fhir
        destinations: list[Destination] = []
        if fhir.base_url:
            connector = aiohttp.TCPConnector(ssl=self.fhir_tls) if self.fhir_tls is not None else None
            self._session = aiohttp.ClientSession(connector=connector)
            client = FhirClient(self._session, fhir.base_url, token=self.fhir_token, timeout=fhir.timeout_seconds)
            destinations.append(FhirDestination(client, self.index.engine, self.vault, fhir, wado_url(self.settings)))
        if self.hl7:
            destinations.append(OruDestination(self.hl7, self.index.engine, self.vault, tls=self.oru_tls))
        self.worker = OutboxWorker(
            self.outbox, ReconciliationQueue(self.index.engine), destinations,
            retry_initial=fhir.retry_initial_seconds, retry_max=fhir.retry_max_seconds,
            stable_seconds=fhir.stable_seconds, metrics=self.metrics,
            holder=self.member.holder if self.member else None, lease_seconds=self.settings.cluster.lease_seconds,
        )  # fmt: skip
        self._tasks.append(asyncio.create_task(self.worker.run(), name="emr-outbox-worker"))
        if fhir.base_url:
            self.publisher = StablePublisher(
                StudyPublications(self.index.engine), stable_seconds=fhir.stable_seconds, on_announce=self.worker.notify,
                may_scan=self._may_scan,
            )
            self._tasks.append(asyncio.create_task(self.publisher.run(), name="emr-publisher"))
        log.info("EMR link started: %s", ", ".join(d.name for d in destinations))

    def _may_scan(self) -> bool:
        return self.member is None or self.member.holds(SCAN_LEASE)

    def wake(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
