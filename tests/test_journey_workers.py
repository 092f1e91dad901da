"""`serve --workers N`: worker processes sharing the ports, one killed on its own, a change of N.

Each test runs the gateway as an operator would, under its supervisor, and asserts
against what senders were told Success for.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage

from tests.conftest import s3_env
from tests.factory import ct_series, to_bytes
from tests.gateway_process import GatewayProcess
from tests.test_journey_no_loss import AckRecorder, _assert_exactly_stored, _nodelay


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s")
        time.sleep(0.1)


def _send_all(gateway: GatewayProcess, series: list, acked: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """Send until every instance was acknowledged once; what ``acked`` holds already is not sent.

    A loaded machine may time an association out, and pynetdicom senders in
    threads of one process now and then lose a response the gateway sent (seen
    on the wire): such an instance is sent again, as a modality would.
    """
    acked = dict(acked or {})
    missing = [ds for ds in series if ds.SOPInstanceUID not in acked]
    for _ in range(5):
        if not missing:
            return acked
        recorder = AckRecorder(gateway.dicom_port)
        recorder.send(missing)
        acked.update(recorder.acked)
        missing = [ds for ds in missing if ds.SOPInstanceUID not in recorder.acked]
    if missing:
        raise AssertionError(f"{len(missing)} instance(s) never acknowledged")
    return acked


def test_workers_share_the_dicom_and_http_ports(start_gateway) -> None:
    gateway: GatewayProcess = start_gateway(workers=2)
    pids = {w["pid"] for w in gateway.workers_view()}
    assert len(pids) == 2 and all(w["alive"] for w in gateway.workers_view())

    # HTTP: every request on a connection of its own; the kernel spreads them over both workers.
    answered = set()
    for _ in range(24):
        request = urllib.request.Request(gateway.base_url + "/health", headers=gateway.auth_headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            answered.add(json.loads(response.read())["answered_by"])
    assert answered == pids

    # DICOM: associations held open at once land on both workers.
    ae = AE(ae_title="SHARER")
    ae.add_requested_context(CTImageStorage)
    assocs = [
        ae.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW", evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])
        for _ in range(16)
    ]
    try:
        assert all(a.is_established for a in assocs)

        def all_counted() -> list[dict] | None:
            view = gateway.workers_view()
            return view if sum(w["associations"] for w in view) == 16 else None

        view = _wait(all_counted, 10, "16 associations on the board")
        assert all(w["associations"] > 0 for w in view), view
    finally:
        for a in assocs:
            a.release()


def test_receiver_killed_mid_load_keeps_every_acknowledged_instance_exactly_once(start_gateway) -> None:
    gateway: GatewayProcess = start_gateway(workers=2)
    series = ct_series(600, size=128)
    recorders = [AckRecorder(gateway.dicom_port) for _ in range(4)]
    threads = [  # paced: the associations are still sending when the board shows where they are
        threading.Thread(target=r.send, args=(series[i * 150 : (i + 1) * 150], 0.05)) for i, r in enumerate(recorders)
    ]
    for thread in threads:
        thread.start()

    def busy_worker() -> int | None:
        assert any(t.is_alive() for t in threads), f"the load ended before a worker was seen busy: {recorders}"
        acked = sum(len(r.acked) for r in recorders)
        view = gateway.workers_view()
        busiest = max(view, key=lambda w: w["associations"])
        return [busiest["worker"]] if acked >= 20 and busiest["associations"] else None  # worker 0 is falsy

    [victim] = _wait(busy_worker, 120, "load on a worker")
    old_pid = gateway.kill_worker(victim)  # SIGKILL that one receiver; waits for its successor
    for thread in threads:
        thread.join(120)
    assert gateway.proc is not None and gateway.proc.poll() is None  # the supervisor lived on
    acked = {uid: data for r in recorders for uid, data in r.acked.items()}
    assert len(acked) < len(series)  # the killed worker's associations were cut short
    view = {w["worker"]: w for w in gateway.workers_view()}
    assert view[victim]["pid"] != old_pid and view[victim]["restarts"] == 1

    gateway.wait_idle(timeout=90)
    rows = gateway.open_index().all_instances()
    stored = {r["sop_instance_uid"] for r in rows}
    assert set(acked) <= stored
    assert len(stored - set(acked)) <= 4  # at most one in flight per association at the kill
    sent = {ds.SOPInstanceUID: to_bytes(ds) for ds in series}
    _assert_exactly_stored(gateway, {uid: sent[uid] for uid in stored})

    _send_all(gateway, series)  # the rest, and again what is stored: nothing is filed twice
    gateway.wait_idle(timeout=90)
    _assert_exactly_stored(gateway, sent)


def test_fewer_workers_file_the_spools_of_the_ones_gone(start_gateway, s3_server) -> None:
    # The object store is down while two workers receive: everything waits in their two spools.
    env = s3_env(s3_server, f"shrink-{uuid.uuid4().hex[:8]}")
    gateway: GatewayProcess = start_gateway(env, workers=2)
    series = ct_series(64, size=64)
    s3_server.stop()
    try:
        recorders = [AckRecorder(gateway.dicom_port) for _ in range(8)]
        threads = [
            threading.Thread(target=r.send, args=(series[i * 8 : (i + 1) * 8],)) for i, r in enumerate(recorders)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        acked = _send_all(gateway, series, {uid: data for r in recorders for uid, data in r.acked.items()})
        view = gateway.workers_view()
        assert all(w["backlog_instances"] > 0 for w in view), view  # both spools hold some
        gateway.stop()
    finally:
        s3_server.start()

    gateway.workers = 1  # the same data directory, one process: it files worker-1's spool too
    gateway.start()
    gateway.wait_idle(timeout=90)
    _assert_exactly_stored(gateway, acked)
    gateway.stop()
    gateway.workers = 2  # and back: nothing is filed twice
    gateway.start()
    gateway.wait_idle(timeout=60)
    _assert_exactly_stored(gateway, acked)


def test_a_port_in_use_fails_the_start_with_its_name(tmp_path) -> None:
    gateway = GatewayProcess(tmp_path / "gw", {}, workers=2)
    holder = socket.socket()
    holder.bind(("127.0.0.1", gateway.http_port))
    holder.listen()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "serve"], env=gateway._environment(), capture_output=True, text=True,
            timeout=120,
        )
    finally:
        holder.close()
    assert result.returncode == 1
    assert f"cannot start: HTTP port 127.0.0.1:{gateway.http_port}: in use" in result.stderr
    assert "started (pid" not in result.stderr  # refused before any child, no restart loop


def test_metrics_add_up_every_worker(start_gateway) -> None:
    gateway: GatewayProcess = start_gateway(workers=2)
    _send_all(gateway, ct_series(12, size=32)[:6])
    for i in range(6):  # several associations: both workers receive some
        _send_all(gateway, ct_series(1, size=32, seed=100 + i))
    gateway.wait_idle()
    status, text = gateway.get("/metrics")
    assert status == 200
    received = sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("pacsgw_instances_received_total")
    )
    stored = [float(line.split()[-1]) for line in text.splitlines() if line.startswith("pacsgw_instances_stored_total")]
    assert received == 12 and stored == [12.0], text
    assert [line for line in text.splitlines() if line.startswith("pacsgw_spool_backlog_instances ")] == [
        "pacsgw_spool_backlog_instances 0.0"
    ]


def test_a_revoked_token_stops_working_on_every_worker_at_once(start_gateway) -> None:
    from storage.index.accounts import AccountStore

    gateway: GatewayProcess = start_gateway(workers=2)
    token = gateway.add_user("leaver", "radiologist")
    bearer = {"Authorization": f"Bearer {token}"}
    # Each request on a connection of its own: both workers check the token, and trust it a moment.
    assert {gateway.get("/dicom-web/studies", bearer, auth=False)[0] for _ in range(16)} == {200}
    index = gateway.open_index()  # another process than the workers, as the `user revoke` command is
    AccountStore(index.engine).revoke_tokens("leaver")
    index.close()
    assert {gateway.get("/dicom-web/studies", bearer, auth=False)[0] for _ in range(16)} == {401}
