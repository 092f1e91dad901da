"""Journey: one site, three nodes behind HAProxy, sharing one PostgreSQL index and one S3 bucket.

Modalities send 3 studies of 300 instances through the balancer on six associations; one node is SIGKILLed in
the middle and started again on its data dir (its spool is filed). Then a radiologist signs a report through the
balancer. What must hold, whichever node did what:

- every instance answered Success is in the bucket under exactly one key, whole, and in the index exactly once;
- every study is published to the EMR's FHIR server exactly once per state it turned stable in (see
  ``_publications``), into one ImagingStudy that ends with all its instances;
- the final report reaches the EMR once: one DiagnosticReport written, one ORU^R01 on MLLP.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pydicom
import pytest
import sqlalchemy as sa

from tests.cluster import Sender, Site, node_name, run_site, wait_for
from tests.peers.mllp import mllp_listener
from tests.conftest import s3_env
from tests.factory import Patient, ct_series
from tests.gateway.emr.hl7.client import ack_code, send
from tests.gateway.emr.hl7.messages import Person, adt
from tests.peers.fhir import run_fhir_server
from tests.peers.postgres import PostgresServer
from tests.peers.seaweedfs import S3Server
from tests.peers.test_fhir_peer import call
from tests.test_journey_emr import FINDINGS, IMPRESSION, emr_env, emr_patient

STUDIES, PER_STUDY, ASSOCIATIONS, NODES = 3, 300, 6, 3
KILL_AT, RESTART_AT = 300, 600  # instances acknowledged


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer, s3_server: S3Server) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("cluster")
    bucket = f"cluster-{uuid.uuid4().hex[:12]}"
    index_url = postgres_server.create_database(f"cluster_{uuid.uuid4().hex[:10]}")
    with mllp_listener() as (mllp_port, oru_received), run_fhir_server(tmp / "fhir") as fhir:
        env = {
            **emr_env(fhir), **s3_env(s3_server, bucket), "PACSGW_INDEX_URL": index_url,
            "PACSGW_HL7_OUTBOUND_HOST": "127.0.0.1", "PACSGW_HL7_OUTBOUND_PORT": str(mllp_port),
        }  # fmt: skip
        with run_site(tmp, NODES, env) as cluster:
            yield {"site": cluster, "fhir": fhir, "bucket": bucket, "s3": s3_server, "oru": oru_received, "index_url": index_url}


@pytest.fixture(scope="module")
def journey(site: dict[str, Any]) -> dict[str, Any]:
    """The load: 3 x 300 instances on six associations through the balancer, one node SIGKILLed at 300
    acknowledged and started again at 600; returns once every node's spool is filed."""
    cluster: Site = site["site"]
    studies = _studies()
    for n in range(STUDIES):
        emr_patient(site["fhir"], mrn=f"MRN-CL-{n}", citizen=f"07920300{n:04d}", insurance=f"DN47900000{n:05d}")
    sender = Sender(cluster.lb.dicom_port, cluster.nodes[0].ae_title)
    part = PER_STUDY * STUDIES // ASSOCIATIONS  # each association sends part of one study
    threads = sender.send_all([study[i : i + part] for study in studies for i in range(0, PER_STUDY, part)])
    wait_for("first instances acknowledged", lambda: len(sender.acked) >= KILL_AT, timeout=120, interval=0.05)
    busiest = max(range(1, NODES), key=lambda i: int(cluster.lb.servers()[("dicom", node_name(i))]["scur"] or 0))
    assert int(cluster.lb.servers()[("dicom", node_name(busiest))]["scur"] or 0) > 0  # it holds associations
    killed_at_ms = time.time() * 1000
    cluster.nodes[busiest].kill()  # SIGKILL: mid-association, its spool not yet filed
    cluster.lb.wait_state({node_name(busiest)}, "DOWN", backends=("dicom",))
    wait_for("more acknowledged", lambda: len(sender.acked) >= RESTART_AT or not any(t.is_alive() for t in threads), timeout=120)
    cluster.restart(busiest)
    for thread in threads:
        thread.join(300)
    assert not any(t.is_alive() for t in threads)
    cluster.wait_idle()
    return {**site, "studies": studies, "sender": sender, "killed": busiest, "killed_at_ms": killed_at_ms}


def _studies() -> list[list[Any]]:
    studies = []
    for n in range(STUDIES):
        patient = Patient(patient_id=f"MRN-CL-{n}", citizen_id=f"07920300{n:04d}", insurance_number=f"DN47900000{n:05d}")
        studies.append(ct_series(PER_STUDY, size=16, patient=patient, accession=f"ACC-CL-{n}", seed=n))
    return studies


def _journal(fhir: str) -> list[dict[str, Any]]:
    reply = call("GET", fhir.removesuffix("/fhir/R4") + "/admin/requests")
    assert reply.status == 200
    return reply.body


def _content(body: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in body.items() if k not in ("id", "meta")}, sort_keys=True)


def _publications(journal: list[dict[str, Any]], study_uid: str) -> tuple[dict[str, list[int]], set[str]]:
    """What we count as publishing the study: the writes of an ImagingStudy identifying it that the server accepted.

    A write that failed (no 2xx) does not count: retrying it is the point of an outbox. Each accepted write is a
    publication, keyed by its content (the body without id and meta). Different contents are expected: a study
    that changes (a killed node's spool filed late, an instance sent again) turns stable again and is published
    again, into the same resource. The same content accepted twice means the same stable state was delivered
    twice (two nodes, or one node twice). That is tolerated once, and only across the kill: a node killed after
    its write was accepted but before it recorded the delivery leaves a task whose lease expires and another
    node writes the same content again, a conditional update of the same resource that leaves the EMR as it was
    (idempotent). Returns, per content, the times (ms) of its accepted writes, and the ids of the resources written."""
    contents: dict[str, list[int]] = {}
    ids = set()
    for entry in journal:
        body = entry.get("body") or {}
        if not entry["path"].startswith("ImagingStudy") or entry["method"] not in ("PUT", "POST") or not 200 <= entry["status"] < 300:
            continue
        if f"urn:oid:{study_uid}" not in [i.get("value") for i in body.get("identifier", [])]:
            continue
        contents.setdefault(_content(body), []).append(entry["at"])
        ids.add(entry["id"])
    return contents, ids


def _doubled(contents: dict[str, list[int]], killed_at_ms: float) -> list[list[int]]:
    """The states written more than once, except one written once before the kill and once after it."""
    return [times for times in contents.values() if len(times) > 1 and not (len(times) == 2 and times[0] < killed_at_ms < times[1])]


def test_hl7_through_the_balancer_is_acknowledged(site: dict[str, Any]) -> None:
    """MLLP in TCP mode: whichever node holds the session acknowledges a patient update."""
    person = Person(mrn="MRN-CL-HL7", citizen="079203009999", insurance="DN4790000009999")
    [ack] = send(site["site"].lb.mllp_port, adt("A08", person))
    assert ack_code(ack) == "AA"


def test_every_instance_acknowledged_is_in_the_bucket_and_the_index_once(journey: dict[str, Any]) -> None:
    studies, sender = journey["studies"], journey["sender"]
    sop_uids = {ds.SOPInstanceUID for study in studies for ds in study}
    assert sender.acked == sop_uids, f"not acknowledged: {len(sop_uids - sender.acked)}; statuses {Counter(s for _, s in sender.statuses)}"
    assert sender.aborts >= 1  # the kill did cut associations
    # The bucket: one object per acknowledged instance, nothing else.
    objects = {o.object_name: o.size for o in journey["s3"].client().list_objects(journey["bucket"], recursive=True)}
    by_sop = Counter(key.rsplit("/", 1)[1].removesuffix(".dcm") for key in objects)
    assert set(by_sop) == sop_uids and set(by_sop.values()) == {1}
    # Whole, and the instance its key names, with the pixels the modality sent (no torn or mixed object).
    sent = {ds.SOPInstanceUID: ds.PixelData for study in studies for ds in study}
    client = journey["s3"].client()

    digests: dict[str, str] = {}

    def whole(key: str) -> bool:
        response = client.get_object(journey["bucket"], key)
        try:
            raw = response.read()
        finally:
            response.close()
            response.release_conn()
        digests[key] = hashlib.sha256(raw).hexdigest()
        stored = pydicom.dcmread(io.BytesIO(raw))
        return key.endswith(f"/{stored.SOPInstanceUID}.dcm") and stored.PixelData == sent[stored.SOPInstanceUID]

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(whole, objects))
    # The index: one row per instance naming that key with the object's size; one row per study and per series.
    engine = sa.create_engine(journey["index_url"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT sop_instance_uid, object_key, size, checksum FROM instances")).all()
            study_rows = conn.execute(sa.text("SELECT study_uid, count(*), max(num_instances) FROM studies GROUP BY 1")).all()
            series_rows = conn.execute(sa.text("SELECT series_uid, count(*) FROM series GROUP BY 1")).all()
    finally:
        engine.dispose()
    assert Counter(r.sop_instance_uid for r in rows) == Counter(sop_uids)
    assert all(objects.get(r.object_key) == r.size for r in rows), "an index row names a missing or different object"
    assert all(digests.get(r.object_key) == r.checksum for r in rows), "an index checksum is not that of the object"
    assert sorted(tuple(r) for r in study_rows) == sorted((s[0].StudyInstanceUID, 1, PER_STUDY) for s in studies)
    assert len(series_rows) == STUDIES and {n for _, n in series_rows} == {1}


def test_every_stable_study_is_published_once(journey: dict[str, Any]) -> None:
    cluster: Site = journey["site"]
    fhir, studies = journey["fhir"], journey["studies"]

    def all_published() -> bool:
        status, pending = cluster.call("GET", "/emr/outbox?state=pending")
        journal = _journal(fhir)
        return status == 200 and pending == [] and all(_final_count(journal, s[0].StudyInstanceUID) == PER_STUDY for s in studies)

    wait_for("every study published with all its instances", all_published, timeout=120)
    journal = _journal(fhir)
    for study in studies:
        contents, ids = _publications(journal, study[0].StudyInstanceUID)
        assert len(ids) == 1, f"study published into {len(ids)} ImagingStudy resources"
        doubled = _doubled(contents, journey["killed_at_ms"])
        assert not doubled, f"{len(doubled)} of {len(contents)} stable states published more than once: {[len(t) for t in doubled]} times"


def test_a_report_signed_through_the_balancer_is_delivered_once(journey: dict[str, Any]) -> None:
    cluster: Site = journey["site"]
    fhir, oru_received = journey["fhir"], journey["oru"]
    uid = journey["studies"][0][0].StudyInstanceUID
    status, _ = cluster.call("PUT", f"/studies/{uid}/report", {"findings": FINDINGS, "impression": IMPRESSION, "template": "CT ngực"})
    assert status == 200
    status, _ = cluster.call("POST", f"/studies/{uid}/report/final")
    assert status == 200
    wait_for("DiagnosticReport", lambda: _reports(_journal(fhir)), timeout=60)
    wait_for("ORU^R01", lambda: _orus(oru_received), timeout=60)
    wait_for("outbox empty", lambda: cluster.call("GET", "/emr/outbox?state=pending") == (200, []), timeout=60)
    orus = _orus(oru_received)
    assert (len(_reports(_journal(fhir))), len(orus)) == (1, 1), "(DiagnosticReport writes accepted, ORU^R01 received)"
    assert "ACC-CL-0" in str(orus[0])


def _orus(received: list[Any]) -> list[Any]:
    return [m for m in received if str(m.segment("MSH")(9)).startswith("ORU^R01")]


def _final_count(journal: list[dict[str, Any]], study_uid: str) -> int:
    """numberOfInstances in the last accepted ImagingStudy write for the study (0: none yet)."""
    for entry in reversed(journal):
        body = entry.get("body") or {}
        if entry["path"].startswith("ImagingStudy") and 200 <= entry["status"] < 300 and f"urn:oid:{study_uid}" in [
            i.get("value") for i in body.get("identifier", [])
        ]:
            return int(body.get("numberOfInstances", 0))
    return 0


def _reports(journal: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accepted DiagnosticReport writes."""
    return [e for e in journal if e["path"].startswith("DiagnosticReport") and e["method"] in ("PUT", "POST") and 200 <= e["status"] < 300]

