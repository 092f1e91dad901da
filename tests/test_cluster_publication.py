"""Cluster: two gateway processes on one PostgreSQL index, both running the stable-study publisher and the outbox
worker, publish each stable study to the EMR's FHIR server exactly once. One killed in the middle of a delivery
leaves its claim to run out; the other finishes, and nothing reaches the EMR twice.

Each node reaches the FHIR server through its own forwarding proxy, which counts the ImagingStudy updates that
reach the EMR, by study and content, and, when told, holds a node's update without ever forwarding it (the node is
then mid-delivery). A study that got an instance more after it was published is published again, with the new
content: what must never happen is the same content twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.index.outbox import IMAGING_STUDY
from storage.index.schema import outbox
from tests.factory import Patient, ct_series
from tests.gateway_process import GatewayProcess
from tests.peers.fhir import run_fhir_server
from tests.peers.postgres import PostgresServer
from tests.test_cluster_hl7_failover import cluster_env, wait_for
from tests.test_journey_emr import emr_env, emr_patient, imaging_studies, send

_FORWARDED = ("Accept", "Content-Type", "Authorization", "If-None-Exist", "If-Match")


class FhirProxy:
    """A forwarding HTTP proxy in front of the FHIR server that counts ImagingStudy updates and can hold them."""

    def __init__(self, target: str) -> None:
        origin = urllib.parse.urlsplit(target)
        self.origin = f"{origin.scheme}://{origin.netloc}"
        self.updates: Counter[tuple[str, str]] = Counter()  # (study UID, content digest) -> updates that reached the EMR
        self.held: list[str] = []  # study UIDs of updates held (never forwarded)
        self.holding = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def published(self, study: str) -> int:
        with self._lock:
            return sum(n for (uid, _), n in self.updates.items() if uid == study)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/fhir/R4"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = urllib.parse.urlsplit(self.path)
                study = ""
                if self.command == "PUT" and path.path.endswith("/ImagingStudy"):
                    identifier = urllib.parse.parse_qs(path.query).get("identifier", [""])[0]
                    study = identifier.rpartition("urn:oid:")[2]
                if study and proxy.holding.is_set():
                    with proxy._lock:
                        proxy.held.append(study)
                    proxy.release.wait(120)
                    with contextlib.suppress(OSError):  # the node is gone by now
                        self.send_error(503)  # never reached the EMR
                    return
                request = urllib.request.Request(
                    proxy.origin + self.path, data=body or None, method=self.command,
                    headers={k: v for k, v in self.headers.items() if k in _FORWARDED},
                )  # fmt: skip
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, headers, data = response.status, response.headers, response.read()
                except urllib.error.HTTPError as err:
                    status, headers, data = err.code, err.headers, err.read()
                if study and status < 300:
                    with proxy._lock:
                        proxy.updates[study, hashlib.sha256(body).hexdigest()] += 1
                self.send_response(status)
                for key in ("Content-Type", "Location", "ETag", "Last-Modified"):
                    if headers.get(key):
                        self.send_header(key, headers[key])
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _any

        return Handler

    def __enter__(self) -> FhirProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fhir_base(tmp_path: Path) -> Iterator[str]:
    with run_fhir_server(tmp_path / "fhir") as base:
        yield base


def node(tmp_path: Path, name: str, index_url: str, fhir_url: str, **extra: str) -> GatewayProcess:
    env = {**emr_env(fhir_url), **cluster_env(index_url, name), **extra}
    gateway = GatewayProcess(tmp_path / name, env)
    gateway.env["PACSGW_HTTP_PUBLIC_URL"] = gateway.base_url
    return gateway


def pending(gateway: GatewayProcess) -> float:
    """The outbox backlog the node's worker last saw (0 until it has looked once)."""
    _, text = gateway.get("/metrics")
    lines = [line for line in text.splitlines() if line.startswith("pacsgw_emr_outbox_pending ")]
    return float(lines[0].split()[1]) if lines else 0.0


def store_study(gateway: GatewayProcess, folder: Path, n: int) -> str:
    series = ct_series(2, size=16, patient=Patient(patient_id="MRN-CLUSTER-1"), accession=f"ACC-CL-{n}")
    send(gateway, series, folder / f"study{n}")
    return str(series[0].StudyInstanceUID)


def test_two_nodes_publish_each_study_once_and_a_killed_nodes_delivery_is_finished_by_the_other(
    tmp_path: Path, postgres_server: PostgresServer, fhir_base: str
) -> None:
    url = postgres_server.create_database(f"cluster_{uuid.uuid4().hex[:10]}")
    emr_patient(fhir_base, mrn="MRN-CLUSTER-1")
    with FhirProxy(fhir_base) as proxy_a, FhirProxy(fhir_base) as proxy_b:
        # Node A waits long for the EMR: a held update keeps it in the middle of its delivery.
        a = node(tmp_path, "node-a", url, proxy_a.base_url, PACSGW_FHIR_TIMEOUT_SECONDS="60")
        b = node(tmp_path, "node-b", url, proxy_b.base_url)
        try:
            a.start()
            first = store_study(a, tmp_path, 0)  # alone first: the EMR's Endpoint is created once
            wait_for("the first study published", lambda: proxy_a.published(first))
            b.start()
            # Both nodes receive, both run publishers and outbox workers.
            studies = [first] + [store_study(a if n % 2 else b, tmp_path, n) for n in range(1, 9)]
            wait_for("every study published", lambda: all(proxy_a.published(s) + proxy_b.published(s) for s in studies), 60)
            assert max((proxy_a.updates + proxy_b.updates).values()) == 1  # no content twice
            print(f"updates delivered by node A: {proxy_a.updates.total()}, by node B: {proxy_b.updates.total()}")

            # Node A alone takes new studies, and is killed while the EMR has not answered its update.
            b.stop()
            proxy_a.holding.set()
            late = [store_study(a, tmp_path, n) for n in range(9, 12)]
            wait_for("node A in the middle of a delivery", lambda: proxy_a.held)
            b.start()
            wait_for("node B's outbox worker has looked", lambda: pending(b) >= 1)
            assert proxy_b.published(proxy_a.held[0]) == 0  # node A holds it: node B does not send it meanwhile
            a.kill()
            wait_for("node B finishes what node A held", lambda: all(proxy_b.published(s) for s in late), 60)
            proxy_a.release.set()
            everything = studies + late
            assert max((proxy_a.updates + proxy_b.updates).values()) == 1
            assert proxy_a.held[0] in late and proxy_b.published(proxy_a.held[0]) >= 1
            assert not any(proxy_a.published(s) for s in late)  # what node A held never reached the EMR
            for study in everything:
                [resource] = imaging_studies(fhir_base, study)
                assert resource["numberOfInstances"] == 2

            index = b.open_index()
            try:
                with index.engine.connect() as conn:
                    rows = conn.execute(
                        select(outbox.c.subject, outbox.c.delivered_at, outbox.c.holder).where(outbox.c.kind == IMAGING_STUDY)
                    ).all()
            finally:
                index.close()
            assert sorted(r.subject for r in rows) == sorted(everything)  # announced once each
            assert all(r.delivered_at is not None and r.holder == "" for r in rows)
        finally:
            a.kill()
            b.kill()
