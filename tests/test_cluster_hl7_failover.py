"""Cluster: one active HL7 listener per site. Two gateway processes share one PostgreSQL index; the one holding the
site lease ``hl7-listener`` listens, the other does not. The EMR sends ADT to the holder, which is SIGKILLed in the
middle of the stream; the other takes the lease once it has run out and listens. The EMR (as interface engines do)
sends a message again until it is acknowledged: nothing acknowledged is lost and the messages apply in order.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from storage.index.schema import patients
from tests.gateway.emr.hl7.client import ack_code, send
from tests.gateway.emr.hl7.messages import Person, adt
from tests.gateway_process import GatewayProcess
from tests.peers.postgres import PostgresServer

HEARTBEAT, LEASE = 0.25, 1.5


def cluster_env(index_url: str, node: str) -> dict[str, str]:
    return {
        "PACSGW_INDEX_URL": index_url,
        "PACSGW_CLUSTER_NODE_NAME": node,
        "PACSGW_CLUSTER_HEARTBEAT_SECONDS": str(HEARTBEAT),
        "PACSGW_CLUSTER_LEASE_SECONDS": str(LEASE),
    }


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def cluster_view(gateway: GatewayProcess) -> dict[str, Any]:
    status, body = gateway.get("/health")
    assert status == 200
    return body["cluster"]


@pytest.fixture
def two_nodes(tmp_path, postgres_server: PostgresServer):
    url = postgres_server.create_database(f"cluster_{uuid.uuid4().hex[:10]}")
    started: list[GatewayProcess] = []

    def start(node: str) -> GatewayProcess:
        gateway = GatewayProcess(tmp_path / node, cluster_env(url, node))
        started.append(gateway)
        gateway.start()
        return gateway

    yield start
    for gateway in started:
        gateway.kill()


def test_the_hl7_listener_fails_over_to_the_other_node_losing_nothing_acknowledged(two_nodes) -> None:
    a = two_nodes("node-a")
    b = two_nodes("node-b")
    def both() -> dict[str, Any] | None:
        view = cluster_view(a)
        return view if len(view["processes"]) == 2 else None

    view = wait_for("both processes in the cluster view", both)
    assert view["leases"]["hl7-listener"] == f"node-a/{a.proc.pid}"
    assert {p["node"] for p in view["processes"]} == {"node-a", "node-b"} and not any(p["stale"] for p in view["processes"])
    assert listening(a.hl7_port) and not listening(b.hl7_port)  # one active listener per site
    status, anonymous = a.get("/health", auth=False)
    assert status == 200 and set(anonymous) == {"live", "ready"}

    # The EMR's stream: new patients, and one patient renamed again and again (its order must hold).
    stream = []
    for i in range(60):
        stream.append(adt("A08", Person(mrn=f"MRN-FO-{i:03d}", family="Phạm", given=f"Bệnh nhân {i}", citizen="", insurance="")))
        stream.append(adt("A08", Person(mrn="MRN-FO-ORDER", family="Võ", given=f"Lần {i}", citizen="", insurance="")))
    acknowledged: list[int] = []
    by_port: dict[int, int] = {a.hl7_port: 0, b.hl7_port: 0}
    first_ack_after_kill: list[float] = []
    killed_at: list[float] = []

    def emr() -> None:
        ports = [a.hl7_port, b.hl7_port]
        for n, text in enumerate(stream):
            while True:  # again until acknowledged, trying the other address in turn (as the load balancer would)
                port = ports[0]
                try:
                    [ack] = send(port, text)
                except (OSError, EOFError, TimeoutError):  # refused, reset, or closed before its ACK
                    ports.reverse()
                    time.sleep(0.05)
                    continue
                assert ack_code(ack) == "AA"
                acknowledged.append(n)
                by_port[port] += 1
                if killed_at and not first_ack_after_kill and port == b.hl7_port:
                    first_ack_after_kill.append(time.monotonic())
                break

    sender = threading.Thread(target=emr)
    sender.start()
    wait_for("a third of the stream acknowledged by node A", lambda: len(acknowledged) >= len(stream) // 3)
    a.kill()  # SIGKILL: its lease is not given up, it runs out
    killed_at.append(time.monotonic())
    sender.join(120)
    assert not sender.is_alive()

    assert acknowledged == list(range(len(stream)))
    assert by_port[a.hl7_port] >= len(stream) // 3 and by_port[b.hl7_port] > 0
    takeover = first_ack_after_kill[0] - killed_at[0]
    assert takeover < LEASE + 2 * HEARTBEAT + 3.0, takeover  # the lease's TTL, a beat, and a loaded machine
    view = cluster_view(b)
    assert view["leases"]["hl7-listener"] == f"node-b/{b.proc.pid}"
    wait_for("node A shown stale", lambda: any(p["node"] == "node-a" and p["stale"] for p in cluster_view(b)["processes"]))

    index = b.open_index()
    try:
        with index.engine.connect() as conn:
            rows = dict(conn.execute(select(patients.c.patient_id, patients.c.patient_name).where(patients.c.patient_id.like("MRN-FO-%"))).all())
    finally:
        index.close()
    assert sorted(k for k in rows if k != "MRN-FO-ORDER") == [f"MRN-FO-{i:03d}" for i in range(60)]  # every one acknowledged
    assert rows["MRN-FO-ORDER"] == "Võ^Lần 59"  # applied in order, across the failover
    print(f"HL7 failover: node B acknowledged {takeover:.2f} s after node A was killed (lease {LEASE} s, beat {HEARTBEAT} s)")


def test_a_clean_stop_hands_the_listener_over_at_once(tmp_path, postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database(f"cluster_{uuid.uuid4().hex[:10]}")
    slow = {**cluster_env(url, "node-a"), "PACSGW_CLUSTER_LEASE_SECONDS": "30"}  # a lease that would take long to run out
    a = GatewayProcess(tmp_path / "node-a", slow)
    b = GatewayProcess(tmp_path / "node-b", {**slow, "PACSGW_CLUSTER_NODE_NAME": "node-b"})
    try:
        a.start()
        b.start()
        person = Person(mrn="MRN-HANDOVER", family="Đặng", given="Văn Bình", citizen="", insurance="")
        assert ack_code(send(a.hl7_port, adt("A08", person))[0]) == "AA"
        assert not listening(b.hl7_port)
        stopped = time.monotonic()
        a.stop()  # SIGTERM: the lease is given up, not left to run out
        wait_for("node B listening", lambda: listening(b.hl7_port), timeout=10)
        assert time.monotonic() - stopped < 15  # well before the 30 s lease
        assert ack_code(send(b.hl7_port, adt("A08", person))[0]) == "AA"
        assert cluster_view(b)["leases"]["hl7-listener"] == f"node-b/{b.proc.pid}"
        assert [p["node"] for p in cluster_view(b)["processes"]] == ["node-b"]  # node A left the registry
    finally:
        a.kill()
        b.kill()
