"""The no-loss contract: every acknowledged instance is stored and indexed exactly once, whatever fails.

Each test asserts the exact set of stored instances against the set the
sender was told Success for.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from copy import deepcopy
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import CTImageStorage

from gateway.ingest.instance import parse_instance
from tests.conftest import s3_env, storescu
from tests.factory import ct_series, to_bytes, truncated, with_bad_uid, without, write_files
from tests.gateway_process import GatewayProcess
from tests.peers.orthanc import DCMTK_ENV, dcmtk_binary
from tests.peers.ports import free_port


def dataset_bytes(part10: bytes) -> bytes:
    """The encoded dataset after the File Meta Information (the meta is rebuilt by the receiver)."""
    assert part10[128:132] == b"DICM"
    group_length = int.from_bytes(part10[140:144], "little")  # (0002,0000) UL, explicit VR LE
    return part10[144 + group_length :]


def _assert_exactly_stored(gateway: GatewayProcess, expected: dict[str, bytes]) -> None:
    """Index and object store hold exactly ``expected`` (SOP UID -> bytes sent), each object complete."""
    rows = gateway.open_index().all_instances()
    assert sorted(r["sop_instance_uid"] for r in rows) == sorted(expected)
    store = gateway.open_store()
    keys = store.list_keys("studies/")
    assert sorted(keys) == sorted(r["object_key"] for r in rows)
    for row in rows:
        data = store.get(row["object_key"])
        assert len(data) == row["size"]
        sent = expected[row["sop_instance_uid"]]
        assert dataset_bytes(data) == dataset_bytes(sent), "stored object differs from what was sent"


def _nodelay(event) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class AckRecorder:
    """A pynetdicom sender that records which instances were acknowledged with Success, and why it stopped."""

    def __init__(self, port: int, timeout: float = 2.0) -> None:
        self.port = port
        self.timeout = timeout
        self.acked: dict[str, bytes] = {}
        self.failed: list[int] = []
        self.slowest = 0.0
        self.ended = "not started"

    def send(self, datasets: list, pause: float = 0.0) -> None:
        ae = AE(ae_title="RECORDER")
        ae.dimse_timeout = ae.network_timeout = ae.acse_timeout = self.timeout
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", self.port, ae_title="PACSGW", evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])
        if not assoc.is_established:
            self.ended = "association not established"
            return
        self.ended = "all sent"
        try:
            for ds in datasets:
                started = time.monotonic()
                try:
                    status = assoc.send_c_store(ds)
                except (RuntimeError, ValueError, OSError) as exc:
                    self.ended = f"{type(exc).__name__}: {exc}"
                    break
                self.slowest = max(self.slowest, time.monotonic() - started)
                if not assoc.is_established:
                    self.ended = "association ended" + ("" if status else " without an answer")
                    break
                if status and status.Status == 0x0000:
                    self.acked[ds.SOPInstanceUID] = to_bytes(ds)
                else:
                    self.failed.append(status.Status if status else -1)  # -1: no answer
                if pause:
                    time.sleep(pause)
        finally:
            if assoc.is_established:
                assoc.release()

    def __repr__(self) -> str:
        return f"<sender: {len(self.acked)} acknowledged, {self.failed=}, slowest {self.slowest:.2f} s, {self.ended}>"


@pytest.mark.parametrize("workers", [1, 2])
def test_s3_outage_mid_ingest_loses_nothing(start_gateway, s3_server, tmp_path: Path, workers: int) -> None:
    gateway = start_gateway(s3_env(s3_server, f"outage-{uuid.uuid4().hex[:8]}"), workers=workers)
    series = ct_series(60, size=64)
    files = write_files(series, tmp_path / "ct")
    sender = subprocess.Popen(
        [dcmtk_binary("storescu"), "-aec", "PACSGW", "127.0.0.1", str(gateway.dicom_port), *map(str, files)],
        env={**os.environ, **DCMTK_ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.15)
        s3_server.stop()  # S3 dies while the modality is sending
        _, stderr = sender.communicate(timeout=120)
        assert sender.returncode == 0, stderr  # every C-STORE still succeeded, into the spool

        more = ct_series(10, size=64, study_uid=series[0].StudyInstanceUID, seed=1)
        result = storescu(gateway.dicom_port, write_files(more, tmp_path / "more"))
        assert result.returncode == 0, result.stderr

        time.sleep(1.5)
        status, health = gateway.get("/health")
        assert status == 503 and not health["ready"]
        assert health["object_store"]["ok"] is False
        assert health["spool"]["backlog_instances"] > 0
    finally:
        if not s3_server.running:
            s3_server.start()
    gateway.wait_idle(timeout=90)
    _assert_exactly_stored(gateway, {ds.SOPInstanceUID: to_bytes(ds) for ds in series + more})
    status, health = gateway.get("/health")
    assert status == 200 and health["storing"]["ok"]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_sigkill_mid_ingest_keeps_every_acknowledged_instance(start_gateway, s3_server, backend, workers: int) -> None:
    env = s3_env(s3_server, f"kill-{uuid.uuid4().hex[:8]}") if backend == "s3" else {}
    gateway = start_gateway(env, workers=workers)  # 2: the supervisor and all its children killed at once
    series = ct_series(400, size=128)
    recorder = AckRecorder(gateway.dicom_port)
    thread = threading.Thread(target=recorder.send, args=(series,))
    thread.start()
    deadline = time.monotonic() + 30
    while len(recorder.acked) < 80 and time.monotonic() < deadline:
        time.sleep(0.005)
    gateway.kill()  # SIGKILL: no chance to flush or tidy up
    thread.join(30)
    acked = dict(recorder.acked)
    assert 80 <= len(acked) < len(series)

    gateway.start()
    gateway.wait_idle(timeout=60)
    rows = gateway.open_index().all_instances()
    stored = {r["sop_instance_uid"] for r in rows}
    # Every acknowledged instance survived; at most the one in flight at the kill may also be there.
    assert set(acked) <= stored
    assert len(stored - set(acked)) <= 1
    sent = {ds.SOPInstanceUID: to_bytes(ds) for ds in series}
    _assert_exactly_stored(gateway, {uid: sent[uid] for uid in stored})

    # Nothing is filed twice when the rest of the study is sent again after the restart.
    again = AckRecorder(gateway.dicom_port)
    again.send(series)
    gateway.wait_idle(timeout=60)
    _assert_exactly_stored(gateway, sent)
    [study] = gateway.get(f"/dicom-web/studies?StudyInstanceUID={series[0].StudyInstanceUID}")[1]
    assert study["00201208"]["Value"] == [len(series)]


def test_malformed_flood_is_refused_and_nothing_bad_is_stored(start_gateway, tmp_path: Path) -> None:
    gateway = start_gateway()
    good = ct_series(10, size=32)
    base = good[0]
    bad_datasets = []
    for i in range(5):
        bad_datasets += [
            without(base, "StudyInstanceUID"),
            without(base, "SeriesInstanceUID"),
            with_bad_uid(base, "StudyInstanceUID", f"1.2.0{i}.3"),
            with_bad_uid(base, "SeriesInstanceUID", f"1.2.3.abc{i}"),
            without(base, "PixelData"),
        ]
    # Raw byte streams cut short at different points (sent as they are, not re-encoded).
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    raw_files = []
    for i in range(10):
        path = raw_dir / f"truncated-{i}.dcm"
        path.write_bytes(truncated(ct_series(1, size=32, seed=i)[0], keep=0.2 + 0.075 * i))
        raw_files.append(path)

    ae = AE(ae_title="FLOOD")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context("1.2.3.4.5.6.7")  # an unknown SOP class
    assoc = ae.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    assert assoc.is_established
    assert "1.2.3.4.5.6.7" not in [str(cx.abstract_syntax) for cx in assoc.accepted_contexts]
    statuses = [assoc.send_c_store(ds).Status for ds in bad_datasets]
    chunked = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the files' bytes as they are
    try:
        statuses += [assoc.send_c_store(path).Status for path in raw_files]
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked
    good_statuses = [assoc.send_c_store(ds).Status for ds in good]  # the association is still usable
    assoc.release()

    assert all(status != 0x0000 for status in statuses), [hex(s) for s in statuses]
    assert {hex(s) for s in statuses} <= {"0xc000", "0xc001", "0xc002", "0xa900"}
    assert good_statuses == [0x0000] * len(good)
    gateway.wait_idle()
    _assert_exactly_stored(gateway, {ds.SOPInstanceUID: to_bytes(ds) for ds in good})
    refusals = [line for line in gateway.log_tail(500).splitlines() if "refused:" in line]
    assert len(refusals) == len(statuses)  # one log line per refused instance


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("policy", ["keep_first", "replace"])
def test_resent_instance_is_never_duplicated(start_gateway, policy, workers: int) -> None:
    # With 2 workers each association may land on either: the copies are filed by different processes.
    gateway = start_gateway({"PACSGW_INGEST_ON_DUPLICATE": policy}, workers=workers)
    first = ct_series(1, size=32)[0]
    second = deepcopy(first)
    second.SeriesDescription = "corrected"
    for ds in (first, first, second):
        recorder = AckRecorder(gateway.dicom_port)
        recorder.send([ds])
        assert list(recorder.acked) == [ds.SOPInstanceUID]
        gateway.wait_idle()
    expected = first if policy == "keep_first" else second
    _assert_exactly_stored(gateway, {first.SOPInstanceUID: to_bytes(expected)})
    [row] = gateway.open_index().all_instances()
    stored = dcmread(io.BytesIO(gateway.open_store().get(row["object_key"])))
    assert stored.SeriesDescription == expected.SeriesDescription


@pytest.mark.parametrize("workers", [1, 2])
def test_full_spool_answers_out_of_resources_and_keeps_what_it_acknowledged(start_gateway, s3_server, workers: int) -> None:
    # S3 reachable at start-up, then gone: the spool fills up and must say so.
    bucket = f"full-{uuid.uuid4().hex[:8]}"
    sample = to_bytes(ct_series(1, size=64)[0])
    # A spool record holds the instance and its index record (metadata included) plus framing.
    instance_size = len(sample) + len(json.dumps(parse_instance(sample).record.to_dict())) + 1024
    env = {**s3_env(s3_server, bucket), "PACSGW_SPOOL_MAX_BYTES": str(instance_size * 5)}
    gateway = start_gateway(env, workers=workers)  # 2: the limit is per worker's spool; one association, one worker
    series = ct_series(8, size=64)
    s3_server.stop()
    try:
        recorder = AckRecorder(gateway.dicom_port)
        recorder.send(series)
        assert len(recorder.acked) == 5
        assert recorder.failed == [0xA700] * 3
    finally:
        s3_server.start()
    gateway.wait_idle(timeout=60)
    _assert_exactly_stored(gateway, recorder.acked)


def test_calling_ae_title_and_peer_allow_lists(start_gateway) -> None:
    gateway = start_gateway({"PACSGW_DICOM_ALLOWED_CALLING_AETS": "CT01,MR01"})
    for calling, accepted in (("CT01", True), ("INTRUDER", False)):
        ae = AE(ae_title=calling)
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
        assert assoc.is_established is accepted
        if accepted:
            assoc.release()
        else:
            assert assoc.is_rejected

    closed = start_gateway({"PACSGW_DICOM_ALLOWED_PEERS": "10.1.0.0/16"}, name="closed")
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", closed.dicom_port, ae_title="PACSGW")
    assert not assoc.is_established and assoc.is_rejected
    assert "address not allowed" in closed.log_tail()


@pytest.mark.parametrize("workers", [1, 2])
def test_unreachable_s3_at_start_up_does_not_stop_receiving(start_gateway, tmp_path: Path, workers: int) -> None:
    dead = {
        "PACSGW_STORAGE_BACKEND": "s3",
        "PACSGW_S3_ENDPOINT": f"127.0.0.1:{free_port()}",
        "PACSGW_S3_ACCESS_KEY": "k",
        "PACSGW_S3_SECRET_KEY": "s",
        "PACSGW_S3_SECURE": "false",
        "PACSGW_S3_CONNECT_TIMEOUT": "0.5",
    }
    gateway = start_gateway(dead, wait_ready=False, workers=workers)
    recorder = AckRecorder(gateway.dicom_port)
    recorder.send(ct_series(3, size=32))
    assert len(recorder.acked) == 3
    status, health = gateway.get("/health")
    assert status == 503 and health["spool"]["backlog_instances"] == 3
