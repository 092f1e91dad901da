"""The gateway process: modality -> SCP -> spool -> worker -> object store + index -> HTTP."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from dicom_rules.rules import RuleSet, load_rules
from dicom_rules.pseudonyms import derive
from gateway.atna.offbox import OffBoxTrail
from gateway.audit import AuditWriter
from gateway.cluster import ClusterMember
from gateway.dimse.find import FindService
from gateway.dimse.mpps import MppsService
from gateway.dimse.retrieve import RetrieveService
from gateway.dimse.scp import DicomServer
from gateway.dimse.tls_accept import AeBinding
from gateway.dimse.tls_scu import OutboundTls
from gateway.dimse.worklist import WorklistService
from gateway.emr.hl7.handler import Hl7Handler
from gateway.emr.hl7.listener import SITE_LEASE, Hl7Listener
from gateway.emr.link import EmrLink
from gateway.http.app import create_http_app
from gateway.http.emr_routes import EMR_LINK
from gateway.http.health import CLUSTER_VIEW
from gateway.http.https import listener_context, prepare_certificate
from gateway.ingest.committer import Committer
from gateway.ingest.rules_stage import RulesStage
from gateway.ingest.service import IngestService, SpoolSink
from gateway.ingest.spool import SpoolLog
from gateway.spool_drains import Drains, leftover_spools, open_spool
from gateway.ingest.worker import SpoolWorker
from gateway.metrics import GatewayMetrics
from gateway.settings import Settings, SettingsError
from gateway.tls import ReloadableServerContext
from gateway.vault import PseudonymVault
from gateway.worker_board import BACKLOG
from storage.index.accounts import AccountStore
from storage.index.database import IndexDatabase
from storage.object_store.base import ObjectStore, ObjectStoreError
from storage.object_store.cache import CachedObjectStore
from storage.object_store.local import LocalObjectStore
from storage.object_store.s3 import S3ObjectStore
from storage.object_store.s3_sse import EncryptionRefused

log = logging.getLogger(__name__)


def open_object_store(settings: Settings) -> ObjectStore:
    if settings.storage.backend == "s3":
        s3 = settings.s3
        store = S3ObjectStore(
            s3.endpoint,
            s3.bucket,
            s3.access_key,
            s3.secret_key,
            secure=s3.secure,
            region=s3.region,
            connect_timeout=s3.connect_timeout,
            read_timeout=s3.read_timeout,
            max_connections=max(16, settings.spool.upload_concurrency * 2),
            require_create_only=settings.storage.require_create_only,
            encryption=s3.encryption(),
            ssl_context=s3.tls_context(),
        )
        try:
            store.ensure_bucket()
            store.probe_encryption()
        except EncryptionRefused as exc:
            raise SettingsError(f"s3.sse = {s3.sse!r}: {exc}") from None
        except ObjectStoreError as exc:
            # Receiving goes on into the spool; the worker stores once S3 answers (and has shown it encrypts).
            log.warning("object store not reachable at start-up (%s); instances will wait in the spool", exc)
        else:
            try:  # logged and kept for /health; probed again at the first write if this fails
                supported = store.probe_conditional_put()
            except ObjectStoreError as exc:
                log.warning("object store conformance not checked at start-up (%s)", exc)
            else:
                if not supported and settings.storage.require_create_only:
                    raise SettingsError(
                        f"storage.require_create_only is set and {store.description} does not write create-only: "
                        f"{store.conformance}"
                    )
        if settings.storage.read_cache_bytes > 0:
            return CachedObjectStore(store, settings.storage.read_cache_bytes)
        return store
    if settings.s3.sse != "none":
        raise SettingsError(
            f"s3.sse = {settings.s3.sse!r} but storage.backend is 'local': the local store is not encrypted by the "
            "gateway (put data_dir on an encrypted volume)"
        )
    return LocalObjectStore(settings.local_objects_path)


def open_rules_stage(settings: Settings) -> RulesStage:
    """The rules stage (everything identified when no rules file is set); raises on a bad file or a missing secret."""
    rules = load_rules(settings.deid.rules_file) if settings.deid.rules_file else RuleSet(())
    secret = settings.deid_secret()
    if rules.needs_key and secret is None:
        raise SettingsError(
            f"{settings.deid.rules_file}: the rules pseudonymise or anonymise but no secret is configured "
            "(deid.secret or deid.secret_file); the gateway will not store instances it cannot de-identify"
        )
    return RulesStage(
        rules,
        secret=secret,
        date_shift_max_days=settings.deid.date_shift_max_days,
        quarantine_dir=settings.quarantine_path,
        default_issuer=settings.dicom.default_issuer_of_patient_id,
    )


def open_index(settings: Settings) -> IndexDatabase:
    settings.data_path.mkdir(parents=True, exist_ok=True)
    return IndexDatabase.open(settings.index_url)


def open_committer(
    settings: Settings, store: ObjectStore, index: IndexDatabase, metrics: GatewayMetrics | None = None
) -> Committer:
    """The filer's last step (object store, then index), as ``ingest`` and ``spool`` settings say."""
    return Committer(
        store,
        index,
        on_duplicate=settings.ingest.on_duplicate,
        upload_concurrency=settings.spool.upload_concurrency,
        orphan_grace_seconds=settings.ingest.orphan_grace_seconds,
        metrics=metrics,
    )


@dataclass(frozen=True)
class Role:
    """What one process of the gateway runs.

    The default is the whole gateway in one process (``serve.workers = 1``). Under the
    supervisor, ``worker`` i receives (DICOM SCP and HTTP on ports shared with the other
    workers, its own spool ``<spool>/worker-<i>`` and the filer of that spool) and the
    ``hl7`` process runs the HL7 listener and the EMR link, alone.
    """

    name: str = "gateway"  # "gateway" | "worker" | "hl7"
    index: int = 0
    workers: int = 1

    @property
    def receives(self) -> bool:
        return self.name in ("gateway", "worker")

    @property
    def links(self) -> bool:
        return self.name in ("gateway", "hl7")

    def spool_dir(self, settings: Settings) -> Path:
        return settings.spool_path / f"worker-{self.index}" if self.name == "worker" else settings.spool_path


class Gateway:
    """The long-lived parts of one gateway process, opened and closed in order."""

    def __init__(self, settings: Settings, role: Role = Role(), spool_class: type[SpoolLog] = SpoolLog) -> None:
        self.settings = settings
        self.role = role
        self.metrics = GatewayMetrics()
        self.tls_contexts: list[ReloadableServerContext] = []  # every TLS listener's: read again on SIGHUP
        self.rules = open_rules_stage(settings)  # first: a bad rules file stops start-up before anything opens
        self.index = open_index(settings)
        self.vault = PseudonymVault.open(settings, self.index)
        secret = settings.deid_secret()
        process = f"worker-{role.index}" if role.name == "worker" else role.name  # one audit spool per process
        # Worker 0 also sends what processes of an earlier run left in their audit spools (the single gateway too).
        others = frozenset({*(f"worker-{i}" for i in range(role.workers)), "hl7"}) if role.name == "worker" and role.index == 0 else frozenset()
        self.audit = AuditWriter(
            AccountStore(self.index.engine), derive(secret, "audit/digest") if secret else None,
            OffBoxTrail.open(settings, process, others=others),
        )  # fmt: skip
        self.store = open_object_store(settings)
        sp = settings.spool
        hl7 = settings.hl7
        handler = Hl7Handler(
            self.index.engine, application=hl7.application, facility=hl7.facility, stations=hl7.station_map(),
            zone=ZoneInfo(settings.fhir.timezone),
        )
        self.hl7 = Hl7Listener(
            hl7, handler, self.metrics, self.audit, trusted=settings.network.trusted_proxies
        ) if hl7.port and role.links else None
        # Heartbeat and site leases: the HL7 listener listens while this process holds the site's lease.
        label = role.name if role.name != "worker" else f"worker{role.index}"
        self.cluster = ClusterMember(
            settings, self.index.engine, role=label, info=lambda: {"spool_backlog": self.backlog()[0]}
        )
        if self.hl7 is not None:
            self.cluster.want(SITE_LEASE, self.hl7.start, self.hl7.stop_accepting)
            if self.hl7.tls is not None:
                self.tls_contexts.append(self.hl7.tls)
        self.emr = EmrLink(settings, self.index, self.vault, self.metrics, self.cluster) if role.links else None
        if not role.receives:
            return
        self.spool = open_spool(settings, role.spool_dir(settings), cls=spool_class)
        worker = role.index if role.name == "worker" else None
        self.drains = Drains(
            settings, self.store, self.index, self.metrics, leftover_spools(settings, worker=worker, workers=role.workers)
        )

        self.metrics.watch_spool(lambda: self.backlog()[0], lambda: self.backlog()[1])
        self.committer = open_committer(settings, self.store, self.index, self.metrics)
        self.worker = SpoolWorker(
            self.spool,
            self.committer,
            batch_instances=sp.batch_instances,
            retry_initial=sp.retry_initial_seconds,
            retry_max=sp.retry_max_seconds,
            metrics=self.metrics,
        )
        find = FindService(
            self.index,
            ae_title=settings.dicom.ae_title,
            allowed_aets=settings.dicom.query_aets,
            max_results=settings.dicom.max_find_results,
        )
        retrieve = RetrieveService(
            self.index,
            self.store,
            ae_title=settings.dicom.ae_title,
            allowed_aets=settings.dicom.query_aets,
            destinations=settings.dicom.destinations(),
            max_instances=settings.dicom.max_retrieve_instances,
            tls=OutboundTls(settings.dicom_tls.tls_destinations()),
        )
        worklist = WorklistService(
            self.index, allowed_aets=settings.dicom.worklist_aets, max_results=settings.dicom.max_find_results
        )
        mpps = MppsService(self.index, allowed_aets=settings.dicom.worklist_aets)
        self.ingest = IngestService(
            self.rules.receive,
            SpoolSink(self.spool),
            self.metrics,
            threads=max(4, min(settings.dicom.max_associations, 16)),
        )
        self.dicom = DicomServer(
            settings.dicom, self.ingest, self.metrics, find, retrieve, self.audit, worklist, mpps,
            trusted=settings.network.trusted_proxies, **self._dicom_tls(),
        )
        self.dicom.reuse_port = role.name == "worker"  # the workers share the DICOM port

    def _dicom_tls(self) -> dict[str, Any]:
        """The DICOM TLS port's part of the DICOM server (``dicom_tls``); its context is reloaded on SIGHUP."""
        tls = self.settings.dicom_tls
        if not tls.enabled:
            return {}
        context = ReloadableServerContext(
            tls.certificate_file, tls.private_key_file, client_ca_file=tls.client_ca_file,
            require_client_cert=tls.require_client_certificate, what="DICOM TLS SCP",
        )  # fmt: skip
        self.tls_contexts.append(context)
        return {"plain": tls.plain, "tls_port": tls.port, "tls_context": context.context,
                "ae_binding": AeBinding(tls.ae_binding())}  # fmt: skip

    def backlog(self) -> tuple[int, int]:
        """Instances and bytes acknowledged and not yet stored: in this process's spool and the left-over ones it files."""
        if not self.role.receives:
            return 0, 0
        records, size = self.drains.backlog()
        return self.spool.backlog_records + records, self.spool.backlog_bytes + size

    def reload_tls(self) -> None:
        """SIGHUP: every listener reads its certificate and key again; connections under way go on."""
        for context in self.tls_contexts:
            context.reload()

    async def start(self) -> None:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload_tls)
        except (RuntimeError, ValueError):  # not the main thread (a gateway inside a test process)
            pass
        if self.role.receives:
            self.worker.start()
            self.drains.start()
            await self.dicom.start()
        if self.emr is not None:
            await self.emr.start()
        await self.cluster.start()  # its first beat takes the site leases that are free (the HL7 listener starts)
        # What is alive once started (modules, codecs, tables) lives as long as the process: out of the
        # collector's sight, a full collection takes milliseconds instead of 40 to 120 (each a pause for
        # every association, request and HL7 message under way).
        gc.collect()
        gc.freeze()

    async def stop(self) -> None:
        await self.cluster.stop()  # site leases given up at once: another process takes over without waiting
        if self.hl7 is not None:
            await self.hl7.stop()  # a message being applied finishes (or not at all) and gets no ACK
        if self.emr is not None:
            await self.emr.stop()  # what is not delivered stays in the outbox
        if self.role.receives:
            await self.dicom.stop()  # no new instances
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        if not self.role.receives:
            self.index.close()
            return
        self.drains.stop()
        self.ingest.close()  # appends under way finish before the spool closes
        self.worker.stop()  # what is spooled stays spooled for the next start
        self.committer.close()
        waiting = self.spool.backlog_records
        self.spool.close()
        self.index.close()
        log.info("gateway stopped; %d instance(s) wait in the spool for the next start", waiting)

    def http_app(self) -> web.Application:
        app = create_http_app(
            self.settings,
            self.index,
            self.store,
            self.spool,
            self.ingest,
            self.dicom,
            self.metrics,
            lambda: self.worker.last_error,
            self.audit,
            self.vault,
        )
        if self.emr is not None:
            app[EMR_LINK] = self.emr
        app[BACKLOG] = self.backlog
        app[CLUSTER_VIEW] = self.cluster.view

        async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
            await self.start()
            yield
            await self.stop()

        app.cleanup_ctx.append(lifecycle)
        return app


def check_emr_tls(settings: Settings) -> None:
    """Read the TLS files of the HL7 listener, the ORU^R01 sender and the FHIR client; raises TlsConfigError."""
    if settings.hl7.port:
        settings.hl7.listener_tls()
    if settings.hl7.outbound_host:
        settings.hl7.outbound_tls_context()
    if settings.fhir.base_url:
        settings.fhir.tls_context()


def serve(settings: Settings) -> None:
    """Run the gateway until SIGINT or SIGTERM: in this process (``serve.workers`` 1), else under a supervisor."""
    prepare_certificate(settings)  # before any worker starts: they only read it
    tls = listener_context(settings)  # a bad certificate or key stops the start here, before anything opens
    if settings.serve.process_count > 1:
        from gateway.supervisor import Supervisor

        check_emr_tls(settings)  # the HL7 process reads them too, but its failure would only restart it
        Supervisor(settings).run()
        return
    gateway = Gateway(settings)
    if tls is not None:
        gateway.tls_contexts.append(tls)
    log.info(
        "gateway starting: object store %s, index %s",
        gateway.store.description,
        gateway.index.dialect,
    )
    web.run_app(
        gateway.http_app(),
        host=settings.http.host,
        port=settings.http.port,
        access_log=None,  # query strings carry patient identifiers
        ssl_context=tls.context if tls is not None else None,
        print=lambda _msg: log.info("%s server listening on port %d", "HTTPS" if tls else "HTTP", settings.http.port),
        handle_signals=True,
    )
