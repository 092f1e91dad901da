"""Journey: the audit trail leaves the box. A gateway's audit events reach an rsyslog collector over TLS as DICOM
Audit Messages; the collector is stopped for 30 s under traffic, the gateway stopped, then killed, with messages
spooled, and every event arrives exactly once, in order, each valid against the PS3.15 A.5.1 schema."""

from __future__ import annotations

import threading
import time
from pathlib import Path


from gateway.atna.codes import EVENTS
from tests.gateway.atna.received import Received, parse
from tests.gateway_process import GatewayProcess
from tests.peers.rsyslog import Rsyslog

OUTAGE_SECONDS = 30


def _gateway(tmp_path: Path, collector: Rsyslog) -> GatewayProcess:
    return GatewayProcess(tmp_path / "data", env={
        "PACSGW_AUDIT_SYSLOG_HOST": "localhost", "PACSGW_AUDIT_SYSLOG_PORT": str(collector.port),
        "PACSGW_AUDIT_CA_FILE": str(collector.ca.cert_file), "PACSGW_AUDIT_SOURCE_ID": "pacsgw-test",
        "PACSGW_AUDIT_RETRY_MAX_SECONDS": "1",
    })  # fmt: skip


class Traffic:
    """Requests that are each one audit event (queries, retrievals, refusals), from a thread, until stopped."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.gateway = gateway
        self.stopping = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        paths = ["/dicom-web/studies?PatientID=PGWAAAAAAAAAAAAAAAAA", "/dicom-web/studies/1.2.826.0.1.3680043.10.54.7/metadata",
                 "/dicom-web/studies?PatientID=12345", "/vault/patient/PGWAAAAAAAAAAAAAAAAB"]  # fmt: skip
        while not self.stopping.is_set():
            self.gateway.get(paths[self.sent % len(paths)])
            self.sent += 1
            time.sleep(0.02)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopping.set()
        self.thread.join(10)


def _index_trail(gateway: GatewayProcess) -> list[dict]:
    from storage.index.accounts import AccountStore

    index = gateway.open_index()
    try:
        return list(reversed(AccountStore(index.engine).audit_trail(since=None, username=None, limit=100_000)))
    finally:
        index.close()


def _arrived(collector: Rsyslog, count: int, timeout: float) -> list[Received]:
    lines = collector.wait_for(count, timeout)
    assert len(lines) >= count, f"{len(lines)} of {count} audit messages arrived\n{collector.log_path.read_text()[-2000:]}"
    return [parse(line) for line in lines]


def _settled(collector: Rsyslog, gateway: GatewayProcess, timeout: float = 90) -> tuple[list[dict], list[Received]]:
    """The index's trail and what the collector received, once both have stopped growing and are as long
    (or the time is up: then as they are)."""
    deadline = time.monotonic() + timeout
    last: tuple[int, int] | None = None
    since = time.monotonic()
    while True:
        trail, lines = _index_trail(gateway), collector.messages()
        now = (len(trail), len(lines))
        if now != last:
            last, since = now, time.monotonic()
        elif now[0] == now[1] and time.monotonic() - since > 1.0 or time.monotonic() > deadline:
            return trail, [parse(line) for line in lines]
        time.sleep(0.1)


def _assert_exactly_once_in_order(collector: Rsyslog, gateway: GatewayProcess) -> list[Received]:
    """Every event of the index's trail arrived once, in the trail's order, and nothing else did."""
    trail, received = _settled(collector, gateway)
    numbers = [r.sequence for r in received]
    duplicates = len(numbers) - len(set(numbers))
    assert duplicates == 0, f"{duplicates} message(s) arrived twice"
    assert numbers == list(range(1, len(trail) + 1)), "messages missing or out of order"
    assert {r.process for r in received} == {"gateway"}
    expected = [(EVENTS[row["action"]].event_id.code, row["username"]) for row in trail]
    assert [(r.event_id, r.user) for r in received] == expected
    return received


def test_collector_outage_and_gateway_restart_lose_nothing_and_repeat_nothing(tmp_path: Path, collector: Rsyslog) -> None:
    gateway = _gateway(tmp_path, collector)
    gateway.start()
    try:
        with Traffic(gateway) as traffic:
            _arrived(collector, 20, 30)  # flowing
            collector.stop()  # a graceful stop under traffic
            outage_start = traffic.sent
            time.sleep(OUTAGE_SECONDS)
            assert traffic.sent - outage_start > 100, "too little traffic during the outage to mean anything"
            collector.start()
            during = traffic.sent
            while traffic.sent < during + 50:  # traffic goes on while the backlog is sent
                time.sleep(0.05)
        received = _assert_exactly_once_in_order(collector, gateway)
        kinds = {r.event_id for r in received}
        assert {"110112", "110104", "110110"} <= kinds  # queries, retrievals, vault reveals

        # Messages spooled while the collector is down survive a restart of the gateway.
        collector.stop()
        before = len(_index_trail(gateway))
        for _ in range(30):
            gateway.get("/dicom-web/studies?PatientID=PGWAAAAAAAAAAAAAAAAC")
        gateway.stop()  # graceful: the writer flushes into the spool, which keeps what is not sent
        assert len(_index_trail(gateway)) >= before + 30
        collector.start()
        gateway.start()
        _assert_exactly_once_in_order(collector, gateway)

        # And a gateway killed with messages spooled: once in the index they are on disk in the spool too.
        collector.stop()
        before = len(_index_trail(gateway))
        for _ in range(30):
            gateway.get("/dicom-web/studies?PatientID=PGWAAAAAAAAAAAAAAAAD")
        deadline = time.monotonic() + 10
        while len(_index_trail(gateway)) < before + 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        gateway.kill()
        collector.start()
        gateway.start()
        _assert_exactly_once_in_order(collector, gateway)
    finally:
        gateway.stop()


def test_each_worker_sends_its_own_events_in_order_through_an_outage(tmp_path: Path, collector: Rsyslog) -> None:
    """Under the supervisor each process has its own spool and numbers; none waits for another."""
    gateway = _gateway(tmp_path, collector)
    gateway.workers = 2
    gateway.start()
    try:
        with Traffic(gateway) as traffic:
            _arrived(collector, 20, 30)
            collector.stop()
            time.sleep(5)  # a short outage: the 30 s one is above
            collector.start()
            during = traffic.sent
            while traffic.sent < during + 50:
                time.sleep(0.05)
        trail, received = _settled(collector, gateway)
        assert len(received) == len(trail)
        by_process: dict[str, list[int]] = {}
        for message in received:
            by_process.setdefault(message.process, []).append(message.sequence)
        assert set(by_process) == {"worker-0", "worker-1"}, set(by_process)  # the kernel spread the requests
        for process, numbers in by_process.items():
            assert numbers == list(range(1, len(numbers) + 1)), f"{process}: missing, repeated or out of order"
    finally:
        gateway.stop()
