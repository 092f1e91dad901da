"""Delivering outbox messages to the EMR's FHIR server.

- ``imaging-study``: read the study from the index, find its Patient (a manual
  link first, else by identifier), the Endpoint (created once, conditionally)
  and the ServiceRequest of its accession number, then a conditional update of
  the ImagingStudy on its Study Instance UID: repeats change nothing.
- ``diagnostic-report``: publish the study first (so the report's ImagingStudy
  and Patient exist and agree), then a conditional update of the
  DiagnosticReport on an identifier derived from the study.

A study whose patient cannot be told is parked in the reconciliation queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import urllib.parse
from dataclasses import dataclass
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from gateway.emr.errors import DeliveryError, Parked
from gateway.emr.fhir import codes
from gateway.emr.fhir.client import FhirClient
from gateway.emr.fhir.datetimes import fhir_datetime
from gateway.emr.fhir.diagnostic_report import diagnostic_report, report_query
from gateway.emr.fhir.imaging_study import accession_query, endpoint, imaging_study, study_query
from gateway.emr.fhir.patients import IdentifierSystems, match_patient
from gateway.emr.identity import UNKNOWN, IdentityUnavailable, StudyIdentity, study_identity
from gateway.settings import FhirSettings
from gateway.vault import PseudonymVault
from storage.index.fhir_links import MANUAL, MATCHED, FhirLinks
from storage.index.outbox import DIAGNOSTIC_REPORT, IMAGING_STUDY, OutboxItem
from storage.index.reconciliation import ReconciliationQueue
from storage.index.reports import ReportStore
from storage.index.study_export import ExportStudy, read_study

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Publication:
    study: ExportStudy
    identity: StudyIdentity
    patient_ref: str
    imaging_study_ref: str
    service_request_ref: str | None


class FhirDestination:
    name = "fhir"
    kinds = (IMAGING_STUDY, DIAGNOSTIC_REPORT)

    def __init__(
        self, client: FhirClient, engine: Engine, vault: PseudonymVault | None, settings: FhirSettings, wado_url: str
    ) -> None:
        self.client = client
        self.engine = engine
        self.vault = vault
        self.settings = settings
        self.wado_url = wado_url
        self.zone = ZoneInfo(settings.timezone)
        self.systems = IdentifierSystems(settings.mrn_systems(), settings.citizen_id_system, settings.insurance_number_system)
        self.links = FhirLinks(engine)
        self.queue = ReconciliationQueue(engine)
        self._endpoint_ref: str | None = None

    async def deliver(self, item: OutboxItem) -> None:
        if item.kind == IMAGING_STUDY:
            await self.publish_study(item.subject)
        elif item.kind == DIAGNOSTIC_REPORT:
            await self.publish_report(item.subject, item.payload)
        else:
            raise DeliveryError(f"fhir: no mapping for {item.kind!r} messages", permanent=True)

    async def publish_study(self, study_uid: str) -> Publication:
        study = await asyncio.to_thread(read_study, self.engine, study_uid)
        if study is None or not study.series:
            raise DeliveryError("fhir: the study is not in the index", permanent=True)
        before = await asyncio.to_thread(self.links.get, study_uid)
        identity, patient_ref, source = await self._patient(study)
        endpoint_ref = await self._endpoint()
        order_ref = await self._service_request(identity.accession_number, patient_ref)
        resource = imaging_study(
            study, identity, patient_ref=patient_ref, endpoint_ref=endpoint_ref, service_request_ref=order_ref,
            accession_system=self.settings.accession_system, zone=self.zone,
        )  # fmt: skip
        digest = hashlib.sha256(json.dumps(resource, sort_keys=True).encode()).hexdigest()
        if before is not None and before.imaging_study_ref and before.imaging_study_digest == digest:
            # The EMR took this very content already (a study announced again with nothing it shows changed,
            # e.g. a delivery that read the instances the next announcement was for): not written twice.
            return Publication(study, identity, patient_ref, before.imaging_study_ref, order_ref)
        stored = await self.client.update_where("ImagingStudy", study_query(study_uid), resource)
        ref = f"ImagingStudy/{stored['id']}"
        published = Publication(study, identity, patient_ref, ref, order_ref)
        if before is not None and before.diagnostic_report_ref and before.patient_ref not in ("", patient_ref):
            # The study changed patient (a merge): its report must not stay on the other one. Moved before the
            # new patient is recorded, so that a failure here is tried again with the study.
            payload = await asyncio.to_thread(ReportStore(self.engine).final_payload, study_uid)
            if payload is not None:
                await self._put_report(published, payload)
        await asyncio.to_thread(
            self.links.set, study_uid, patient_ref=patient_ref, link_source=source, imaging_study_ref=ref, imaging_study_digest=digest
        )
        return published

    async def publish_report(self, study_uid: str, payload: dict[str, Any]) -> str:
        return await self._put_report(await self.publish_study(study_uid), payload)

    async def _put_report(self, published: Publication, payload: dict[str, Any]) -> str:
        study, identity, study_uid = published.study, published.identity, published.study.study_uid
        effective = fhir_datetime(identity.study_date if identity.dates_known else "", study.study_time, self.zone)
        resource = diagnostic_report(
            {**payload, "study_uid": study_uid}, patient_ref=published.patient_ref,
            imaging_study_ref=published.imaging_study_ref, service_request_ref=published.service_request_ref,
            effective=effective,
        )  # fmt: skip
        stored = await self.client.update_where("DiagnosticReport", report_query(study_uid), resource)
        ref = f"DiagnosticReport/{stored['id']}"
        await asyncio.to_thread(self.links.set, study_uid, diagnostic_report_ref=ref)
        return ref

    async def _patient(self, study: ExportStudy) -> tuple[StudyIdentity, str, str]:
        link = await asyncio.to_thread(self.links.get, study.study_uid)
        manual = link is not None and link.link_source == MANUAL and link.patient_ref
        try:
            identity = await asyncio.to_thread(study_identity, study, self.vault)
        except IdentityUnavailable as exc:
            if manual:
                return UNKNOWN, link.patient_ref, MANUAL  # type: ignore[union-attr]
            await self._park(study, str(exc), [])
        if manual:
            # An item a delivery under way had opened while the administrator resolved the first one closes too.
            await asyncio.to_thread(self.queue.matched, study.study_uid, link.patient_ref)  # type: ignore[union-attr]
            return identity, link.patient_ref, MANUAL  # type: ignore[union-attr]
        match = await match_patient(self.client, identity.patient, self.systems)
        if match.patient_ref is None:
            await self._park(study, match.reason, match.tried)
        if await asyncio.to_thread(self.queue.matched, study.study_uid, match.patient_ref):
            log.info("a study waiting for reconciliation matched its EMR patient after all")
        return identity, match.patient_ref, MATCHED

    async def _park(self, study: ExportStudy, reason: str, tried: list) -> NoReturn:
        pk = await asyncio.to_thread(self.queue.open, study.study_uid, patient_pk=study.patient.pk, reason=reason, tried=tried)
        raise Parked(f"waiting for reconciliation #{pk}: {reason}", pk)

    async def _endpoint(self) -> str:
        if self._endpoint_ref is None:
            condition = urllib.parse.urlencode({"identifier": f"{codes.URI}|{self.wado_url}"})
            stored = await self.client.create_unless("Endpoint", condition, endpoint(self.wado_url))
            self._endpoint_ref = f"Endpoint/{stored['id']}"
        return self._endpoint_ref

    async def _service_request(self, accession: str, patient_ref: str) -> str | None:
        """The order the study fulfils: the patient's one ServiceRequest with the accession number. Only that
        patient's: an accession number typed wrong at the modality must not tie the study to another's order."""
        if not accession:
            return None
        query = {**accession_query(accession, self.settings.accession_system), "subject": patient_ref}
        try:
            found = await self.client.search("ServiceRequest", query)
        except DeliveryError as exc:
            if not exc.permanent:
                raise
            # An EMR that does not let us search orders: basedOn is a help, the study goes out without it.
            log.warning("ServiceRequest search refused (%s); basedOn left out", exc)
            return None
        if len(found) > 1:
            log.warning("several ServiceRequests carry a study's accession number; basedOn left out")
        return f"ServiceRequest/{found[0]['id']}" if len(found) == 1 else None
