"""The outbox worker with a real index and a real FHIR server: studies and reports delivered once, backoff with
jitter, an unreachable EMR probed by one message, refusals at the longest wait, reconciliation, several
destinations, and the metrics."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp

from gateway.emr.fhir.client import FhirClient
from gateway.emr.fhir.destination import FhirDestination
from gateway.emr.fhir.diagnostic_report import report_identifier
from gateway.emr.oru_delivery import OruDestination
from gateway.emr.outbox_worker import Destination, OutboxWorker
from gateway.metrics import GatewayMetrics
from gateway.settings import FhirSettings
from storage.index.database import IndexDatabase
from storage.index.fhir_links import MANUAL, FhirLinks
from storage.index.outbox import DIAGNOSTIC_REPORT, IMAGING_STUDY, Outbox
from storage.index.reconciliation import ReconciliationQueue
from storage.index.reports import ReportStore
from storage.index.study_publications import StudyPublications
from tests.factory import Patient, ct_series
from tests.gateway.emr.conftest import ACCESSION_SYSTEM, MRN_SYSTEM, emr_order, emr_patient, unique
from tests.peers.fhir import run_fhir_server
from tests.peers.ports import free_port
from tests.peers.test_fhir_peer import search
from tests.storage.conftest import records

INITIAL, MAXIMUM = 0.5, 4.0


@contextlib.asynccontextmanager
async def worker_for(index: IndexDatabase, base: str, *, token: str = "", hl7: Any = None) -> AsyncIterator[tuple[OutboxWorker, GatewayMetrics]]:
    settings = FhirSettings(base_url=base, patient_identifier_systems=[f"*={MRN_SYSTEM}"], accession_system=ACCESSION_SYSTEM)
    async with aiohttp.ClientSession() as session:
        client = FhirClient(session, base, token=token, timeout=2.0)
        destinations: list[Destination] = [FhirDestination(client, index.engine, None, settings, "http://pacs.example.vn/dicom-web")]
        if hl7 is not None:
            destinations.append(OruDestination(hl7, index.engine, None))
        metrics = GatewayMetrics()
        worker = OutboxWorker(
            Outbox(index.engine), ReconciliationQueue(index.engine), destinations,
            retry_initial=INITIAL, retry_max=MAXIMUM, stable_seconds=1.0, metrics=metrics,
        )  # fmt: skip
        yield worker, metrics


def _study(index: IndexDatabase, mrn: str, accession: str = "", count: int = 2, study_uid: str | None = None) -> str:
    series = ct_series(count, size=16, patient=Patient(patient_id=mrn), accession=accession or unique("ACC"), study_uid=study_uid)
    index.commit(records(series))
    return series[0].StudyInstanceUID


def _announce(index: IndexDatabase) -> list[int]:
    publications = StudyPublications(index.engine)
    return publications.announce(publications.stable(cutoff=dt.datetime.now(dt.timezone.utc), since=None, limit=100))


def _row(index: IndexDatabase, pk: int) -> dict[str, Any]:
    return Outbox(index.engine).row(pk)


def _wait(row: dict[str, Any]) -> float:
    return (dt.datetime.fromisoformat(row["next_attempt_at"]) - dt.datetime.now(dt.timezone.utc)).total_seconds()


def _sample(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_study_then_its_report_are_delivered_once(fhir_base: str, sqlite_index: IndexDatabase) -> None:
    mrn, accession = unique("MRN"), unique("ACC")
    patient = emr_patient(fhir_base, mrn=mrn)
    order = emr_order(fhir_base, patient, accession)
    study = _study(sqlite_index, mrn, accession)
    [pk] = _announce(sqlite_index)

    async def scenario() -> GatewayMetrics:
        async with worker_for(sqlite_index, fhir_base) as (worker, metrics):
            assert await worker.run_once() == 1
            assert await worker.run_once() == 0
            reports = ReportStore(sqlite_index.engine)
            reports.save_draft(study, findings="Phổi sáng.", impression="Bình thường.", template="", username="dr.lan", display_name="BS. Lan")
            reports.finalize(study, username="dr.lan", display_name="BS. Lan")
            assert await worker.run_once() == 1
            await worker.refresh_gauges(force=True)
            return metrics

    metrics = asyncio.run(scenario())
    [imaging] = search(fhir_base, "ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{study}")
    assert imaging["subject"]["reference"] == patient and imaging["basedOn"] == [{"reference": order}]
    assert imaging["numberOfInstances"] == 2 and imaging["endpoint"][0]["reference"].startswith("Endpoint/")
    [report] = search(fhir_base, "DiagnosticReport", subject=patient)
    assert report["imagingStudy"] == [{"reference": f"ImagingStudy/{imaging['id']}"}] and report["conclusion"] == "Bình thường."
    assert _row(sqlite_index, pk)["delivered_at"] is not None
    assert Outbox(sqlite_index.engine).listing("pending") == [] and Outbox(sqlite_index.engine).listing("failed") == []
    link = FhirLinks(sqlite_index.engine).get(study)
    assert (link.patient_ref, link.imaging_study_ref) == (patient, f"ImagingStudy/{imaging['id']}")
    assert link.diagnostic_report_ref == f"DiagnosticReport/{report['id']}"
    assert _sample(metrics, "pacsgw_emr_delivered_total", kind=IMAGING_STUDY) == 1
    assert _sample(metrics, "pacsgw_emr_delivered_total", kind=DIAGNOSTIC_REPORT) == 1
    assert _sample(metrics, "pacsgw_emr_publication_lag_seconds_count") == 1
    assert _sample(metrics, "pacsgw_emr_outbox_pending") == 0 and _sample(metrics, "pacsgw_emr_outbox_oldest_pending_seconds") == 0


def test_an_unreachable_emr_is_probed_by_one_message_with_growing_waits(sqlite_index: IndexDatabase) -> None:
    for _ in range(2):
        _study(sqlite_index, unique("MRN"))
    first, second = _announce(sqlite_index)
    down = f"http://127.0.0.1:{free_port()}/fhir/R4"

    async def scenario() -> GatewayMetrics:
        async with worker_for(sqlite_index, down) as (worker, metrics):
            assert await worker.run_once() == 1  # the first fails; the second keeps its place
            row = _row(sqlite_index, first)
            assert row["attempts"] == 1 and "ClientConnector" in row["last_error"]
            assert INITIAL * 0.8 - 0.2 <= _wait(row) <= INITIAL * 1.2
            assert _row(sqlite_index, second)["attempts"] == 0
            Outbox(sqlite_index.engine).make_due(subject=None)
            assert await worker.run_once() == 0  # paused
            worker.wake()  # an administrator's retry tries again at once
            assert await worker.run_once() == 1
            assert INITIAL * 2 * 0.8 - 0.2 <= _wait(_row(sqlite_index, first)) <= INITIAL * 2 * 1.2
            assert all(INITIAL * 0.8 <= worker.backoff(0) <= INITIAL * 1.2 for _ in range(20))
            assert all(MAXIMUM * 0.8 <= worker.backoff(n) <= MAXIMUM for n in (3, 10, 100))
            await worker.refresh_gauges(force=True)
            return metrics

    metrics = asyncio.run(scenario())
    assert _sample(metrics, "pacsgw_emr_delivery_failures_total", kind=IMAGING_STUDY) == 2
    assert _sample(metrics, "pacsgw_emr_outbox_pending") == 2
    assert _sample(metrics, "pacsgw_emr_outbox_oldest_pending_seconds") > 0
    assert [r["id"] for r in Outbox(sqlite_index.engine).listing("failed")] == [first]


def test_refusals_wait_the_longest_and_do_not_hold_up_others(sqlite_index: IndexDatabase, tmp_path: Path) -> None:
    for _ in range(2):
        _study(sqlite_index, unique("MRN"))
    pks = _announce(sqlite_index)
    with run_fhir_server(tmp_path, token="right-token") as base:

        async def scenario() -> None:
            async with worker_for(sqlite_index, base, token="wrong-token") as (worker, _):
                assert await worker.run_once() == 2  # a refusal pauses nothing

        asyncio.run(scenario())
    for pk in pks:
        row = _row(sqlite_index, pk)
        assert row["last_error"] == "FHIR search Patient: HTTP 401 (login)" and row["attempts"] == 1
        assert MAXIMUM * 0.8 - 0.2 <= _wait(row) <= MAXIMUM


def test_an_unknown_patient_waits_for_reconciliation(fhir_base: str, sqlite_index: IndexDatabase) -> None:
    mrn = unique("MRN")
    study = _study(sqlite_index, mrn)
    [pk] = _announce(sqlite_index)
    queue = ReconciliationQueue(sqlite_index.engine)
    chosen = emr_patient(fhir_base, mrn=unique("OTHER"))

    async def scenario() -> GatewayMetrics:
        async with worker_for(sqlite_index, fhir_base) as (worker, metrics):
            assert await worker.run_once() == 1
            [item] = queue.listing("open")
            assert item.study_uid == study and item.reason == "no EMR patient carries the study's MRN, citizen ID or insurance number"
            assert [t["identifier"] for t in item.tried] == ["mrn", "citizen-id", "insurance-number"] and mrn not in str(item.tried)
            row = _row(sqlite_index, pk)
            assert row["last_error"] == f"waiting for reconciliation #{item.pk}: {item.reason}"
            assert MAXIMUM * 0.8 - 0.2 <= _wait(row) <= MAXIMUM + 0.1
            assert search(fhir_base, "ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{study}") == []

            queue.resolve(item.pk, patient_ref=chosen, by="admin")
            assert await worker.run_once() == 1
            # Later instances: published again, to the patient the administrator chose.
            _study(sqlite_index, mrn, count=1, study_uid=study)
            _announce(sqlite_index)
            assert await worker.run_once() == 1
            return metrics

    metrics = asyncio.run(scenario())
    [imaging] = search(fhir_base, "ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{study}")
    assert imaging["subject"]["reference"] == chosen and imaging["numberOfInstances"] == 3
    assert FhirLinks(sqlite_index.engine).get(study).link_source == MANUAL
    assert _sample(metrics, "pacsgw_emr_delivery_failures_total", kind=IMAGING_STUDY) == 0  # waiting is not failing


def test_a_patient_registered_later_is_matched_on_a_retry(fhir_base: str, sqlite_index: IndexDatabase) -> None:
    mrn = unique("MRN")
    study = _study(sqlite_index, mrn)
    [pk] = _announce(sqlite_index)
    queue = ReconciliationQueue(sqlite_index.engine)

    async def scenario() -> None:
        async with worker_for(sqlite_index, fhir_base) as (worker, _):
            await worker.run_once()
            assert queue.open_count() == 1
            registered = emr_patient(fhir_base, mrn=mrn)
            Outbox(sqlite_index.engine).make_due(pk=pk)
            assert await worker.run_once() == 1
            [item] = queue.listing("resolved")
            assert (item.resolved_by, item.patient_ref) == ("emr-link", registered)

    asyncio.run(scenario())
    assert _row(sqlite_index, pk)["delivered_at"] is not None and queue.open_count() == 0
    assert len(search(fhir_base, "ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{study}")) == 1


def test_a_report_reaches_each_destination_once(fhir_base: str, sqlite_index: IndexDatabase) -> None:
    mrn = unique("MRN")
    emr_patient(fhir_base, mrn=mrn)
    study = _study(sqlite_index, mrn)  # never announced: the report publishes its study first
    reports = ReportStore(sqlite_index.engine)
    reports.save_draft(study, findings="Gan to.", impression="Gan nhiễm mỡ.", template="", username="dr.lan", display_name="")
    reports.finalize(study, username="dr.lan", display_name="")
    [item] = Outbox(sqlite_index.engine).due_any([DIAGNOSTIC_REPORT])
    hl7 = SimpleNamespace(outbound_host="127.0.0.1", outbound_port=free_port(), application="PACSGW", facility="BV",
                          outbound_timeout_seconds=1.0)  # fmt: skip

    async def scenario() -> list[str]:
        async with worker_for(sqlite_index, fhir_base, hl7=hl7) as (worker, _):
            assert await worker.run_once() == 1
            versions = [search(fhir_base, "DiagnosticReport", identifier=_report_identifier(study))[0]["meta"]["versionId"]]
            worker.wake()
            Outbox(sqlite_index.engine).make_due(pk=item.pk)
            assert await worker.run_once() == 1
            versions.append(search(fhir_base, "DiagnosticReport", identifier=_report_identifier(study))[0]["meta"]["versionId"])
            return versions

    first, second = asyncio.run(scenario())
    assert first == second  # FHIR took it once; only HL7 v2 is tried again
    row = _row(sqlite_index, item.pk)
    assert row["delivered_at"] is None and row["attempts"] == 2 and row["last_error"].startswith("hl7: ")
    assert Outbox(sqlite_index.engine).acceptances(item.pk) == {"fhir"}
    assert len(search(fhir_base, "ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{study}")) == 1


def _report_identifier(study: str) -> str:
    identifier = report_identifier(study)
    return f"{identifier['system']}|{identifier['value']}"


def test_a_report_waiting_for_reconciliation_still_goes_out_as_oru(fhir_base: str, sqlite_index: IndexDatabase) -> None:
    from tests.gateway.emr.hl7.test_oru import accept, emr_listener

    study = _study(sqlite_index, unique("MRN-NOT-IN-EMR"))  # FHIR cannot tell the patient
    reports = ReportStore(sqlite_index.engine)
    reports.save_draft(study, findings="Phổi sạch.", impression="Bình thường.", template="", username="dr.lan", display_name="")
    reports.finalize(study, username="dr.lan", display_name="")
    [item] = Outbox(sqlite_index.engine).due_any([DIAGNOSTIC_REPORT])

    async def scenario() -> int:
        async with emr_listener(accept) as (port, received):
            hl7 = SimpleNamespace(outbound_host="127.0.0.1", outbound_port=port, application="PACSGW", facility="BV",
                                  outbound_timeout_seconds=5.0)  # fmt: skip
            async with worker_for(sqlite_index, fhir_base, hl7=hl7) as (worker, _):
                assert await worker.run_once() == 1
            return len(received)

    assert asyncio.run(scenario()) == 1  # the EMR's HL7 listener has the report
    assert Outbox(sqlite_index.engine).acceptances(item.pk) == {"hl7"}
    row = _row(sqlite_index, item.pk)
    assert row["delivered_at"] is None and "reconciliation" in row["last_error"]  # FHIR still waits


def test_a_study_moved_to_another_patient_takes_its_report_along(fhir_base: str, sqlite_index: IndexDatabase) -> None:
    from storage.index.patients import Demographics, find_patient, merge_patients, record_demographics
    from storage.index.times import utc_now

    mrn_old, mrn_new = unique("MRN"), unique("MRN")
    old, new = emr_patient(fhir_base, mrn=mrn_old), emr_patient(fhir_base, mrn=mrn_new)
    study = _study(sqlite_index, mrn_old)
    reports = ReportStore(sqlite_index.engine)
    reports.save_draft(study, findings="Gan to.", impression="Gan nhiễm mỡ.", template="", username="dr.lan", display_name="")
    reports.finalize(study, username="dr.lan", display_name="")

    def subject() -> str:
        [report] = search(fhir_base, "DiagnosticReport", identifier=_report_identifier(study))
        return report["subject"]["reference"]

    async def publish() -> None:
        async with worker_for(sqlite_index, fhir_base) as (worker, _):
            await worker.run_once()

    asyncio.run(publish())
    assert subject() == old
    with sqlite_index.engine.begin() as conn:  # the EMR merged the two records (ADT^A40)
        survivor = record_demographics(conn, Demographics(mrn_new, "BV-CHORAY"), utc_now())
        merge_patients(conn, survivor, find_patient(conn, mrn_old, "BV-CHORAY"), utc_now())  # type: ignore[arg-type]
    StudyPublications(sqlite_index.engine).announce([(study, utc_now())])
    asyncio.run(publish())
    [imaging] = search(fhir_base, "ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{study}")
    assert imaging["subject"]["reference"] == new and subject() == new  # the report went along


def test_a_state_announced_again_with_the_same_content_is_not_written_again(fhir_base: str, sqlite_index: IndexDatabase) -> None:
    """A study announced again although nothing the EMR sees changed (its delivery had read the instances the next
    announcement was for) is marked delivered without a second write; new content is written."""
    from sqlalchemy import update

    from storage.index.schema import studies
    from tests.peers.test_fhir_peer import call

    mrn = unique("MRN")
    emr_patient(fhir_base, mrn=mrn)
    study = _study(sqlite_index, mrn)

    def writes() -> int:
        journal = call("GET", fhir_base.removesuffix("/fhir/R4") + "/admin/requests").body
        return sum(1 for e in journal if e["path"].startswith("ImagingStudy") and e["method"] == "PUT" and study in e.get("query", "") + str(e.get("body")))

    async def deliver_announced() -> None:
        async with worker_for(sqlite_index, fhir_base) as (worker, _):
            assert await worker.run_once() == 1

    _announce(sqlite_index)
    asyncio.run(deliver_announced())
    assert writes() == 1
    with sqlite_index.engine.begin() as conn:  # the study's state moves, its content does not
        conn.execute(update(studies).where(studies.c.study_uid == study).values(updated_at=dt.datetime.now(dt.timezone.utc)))
    [pk] = _announce(sqlite_index)
    asyncio.run(deliver_announced())
    assert writes() == 1 and _row(sqlite_index, pk)["delivered_at"] is not None
    _study(sqlite_index, mrn, study_uid=study, count=1)  # an instance more: new content
    _announce(sqlite_index)
    asyncio.run(deliver_announced())
    assert writes() == 2


def test_a_message_cut_off_under_way_keeps_its_lease_and_the_rest_are_given_back(sqlite_index: IndexDatabase) -> None:
    """A stop while the EMR has a message and has not answered: the EMR may have taken it, so the message keeps
    its lease until it runs out (another worker sending it at once would double it); those not tried are free."""
    for _ in range(2):
        _study(sqlite_index, unique("MRN"))
    first, second = _announce(sqlite_index)
    connected = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()  # an EMR that takes the request and never answers
        await reader.read()

    async def scenario() -> None:
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, worker_for(sqlite_index, f"http://127.0.0.1:{port}/fhir/R4") as (worker, _metrics):
            delivering = asyncio.create_task(worker.run_once())
            await asyncio.wait_for(connected.wait(), 10)
            delivering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await delivering
        held = Outbox(sqlite_index.engine).claim([IMAGING_STUDY], "another/1", limit=10, lease_seconds=30)
        assert [item.pk for item in held] == [second]

    asyncio.run(scenario())
