"""The gateway process: modality -> SCP -> spool -> worker -> object store + index -> HTTP."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

from aiohttp import web

from dicom_rules.rules import RuleSet, load_rules
from dicom_rules.pseudonyms import derive
from gateway.audit import AuditWriter
from gateway.dimse.find import FindService
from gateway.dimse.mpps import MppsService
from gateway.dimse.retrieve import RetrieveService
from gateway.dimse.scp import DicomServer
from gateway.dimse.worklist import WorklistService
from gateway.emr.hl7.handler import Hl7Handler
from gateway.emr.hl7.listener import Hl7Listener
from gateway.emr.link import EmrLink
from gateway.http.app import create_http_app
from gateway.http.emr_routes import EMR_LINK
from gateway.ingest.committer import Committer
from gateway.ingest.rules_stage import RulesStage
from gateway.ingest.spool import SpoolLog
from gateway.ingest.worker import SpoolWorker
from gateway.metrics import GatewayMetrics
from gateway.settings import Settings, SettingsError
from gateway.vault import PseudonymVault
from storage.index.accounts import AccountStore
from storage.index.database import IndexDatabase
from storage.object_store.base import ObjectStore, ObjectStoreError
from storage.object_store.cache import CachedObjectStore
from storage.object_store.local import LocalObjectStore
from storage.object_store.s3 import S3ObjectStore

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
        )
        try:
            store.ensure_bucket()
        except ObjectStoreError as exc:
            # Receiving goes on into the spool; the worker stores once S3 answers.
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


class Gateway:
    """The long-lived parts of one gateway process, opened and closed in order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.rules = open_rules_stage(settings)  # first: a bad rules file stops start-up before anything opens
        self.index = open_index(settings)
        self.vault = PseudonymVault.open(settings, self.index)
        secret = settings.deid_secret()
        self.audit = AuditWriter(AccountStore(self.index.engine), derive(secret, "audit/digest") if secret else None)
        self.store = open_object_store(settings)
        sp = settings.spool
        self.spool = SpoolLog(
            settings.spool_path,
            segment_bytes=sp.segment_bytes,
            max_bytes=sp.max_bytes,
            min_free_bytes=sp.min_free_bytes,
            preallocated_segments=sp.preallocated_segments,
        ).open()
        self.metrics.watch_spool(lambda: self.spool.backlog_records, lambda: self.spool.backlog_bytes)
        self.committer = Committer(
            self.store,
            self.index,
            on_duplicate=settings.ingest.on_duplicate,
            upload_concurrency=sp.upload_concurrency,
            metrics=self.metrics,
            orphan_grace_seconds=settings.ingest.orphan_grace_seconds,
        )
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
        )
        worklist = WorklistService(
            self.index, allowed_aets=settings.dicom.worklist_aets, max_results=settings.dicom.max_find_results
        )
        mpps = MppsService(self.index, allowed_aets=settings.dicom.worklist_aets)
        self.dicom = DicomServer(
            settings.dicom, self.spool, self.metrics, self.rules.receive, find, retrieve, self.audit, worklist, mpps
        )
        hl7 = settings.hl7
        handler = Hl7Handler(
            self.index.engine, application=hl7.application, facility=hl7.facility, stations=hl7.station_map(),
            zone=ZoneInfo(settings.fhir.timezone),
        )
        self.hl7 = Hl7Listener(hl7, handler, self.metrics, self.audit) if hl7.port else None
        self.emr = EmrLink(settings, self.index, self.vault, self.metrics)

    async def start(self) -> None:
        self.worker.start()
        await self.dicom.start()
        if self.hl7 is not None:
            await self.hl7.start()
        await self.emr.start()
        # What is alive once started (modules, codecs, tables) lives as long as the process: out of the
        # collector's sight, a full collection takes milliseconds instead of 40 to 120 (each a pause for
        # every association, request and HL7 message under way).
        gc.collect()
        gc.freeze()

    async def stop(self) -> None:
        if self.hl7 is not None:
            await self.hl7.stop()  # a message being applied finishes (or not at all) and gets no ACK
        await self.emr.stop()  # what is not delivered stays in the outbox
        await self.dicom.stop()  # no new instances; appends under way finish
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
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
            self.dicom,
            self.metrics,
            lambda: self.worker.last_error,
            self.audit,
            self.vault,
        )
        app[EMR_LINK] = self.emr

        async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
            await self.start()
            yield
            await self.stop()

        app.cleanup_ctx.append(lifecycle)
        return app


def serve(settings: Settings) -> None:
    """Run the gateway until SIGINT or SIGTERM."""
    gateway = Gateway(settings)
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
        print=lambda _msg: log.info("HTTP server listening on port %d", settings.http.port),
        handle_signals=True,
    )
