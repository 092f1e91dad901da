"""The sender against a real rsyslog (rsyslog-gnutls, RFC 5425): in order, exactly once across collector outages."""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from pathlib import Path


from gateway.atna.sender import AuditSender
from gateway.atna.spool import AuditSpool
from gateway.atna.syslog import syslog_message
from gateway.tls import client_context
from gateway.tls_certs import TrialCa
from tests.peers.rsyslog import Rsyslog

_NUMBER = re.compile(r'sequenceId="(\d+)"')


def _message(item: str, number: int) -> bytes:
    import datetime as dt

    payload = f"<AuditMessage><x n='{item}'/></AuditMessage>".encode()
    return syslog_message(payload, when=dt.datetime.now(dt.timezone.utc), host="test", process="p", number=number)


def _numbers(collector: Rsyslog) -> list[int]:
    return [int(m[1]) for line in collector.messages() if (m := _NUMBER.search(line))]


async def _settle(collector: Rsyslog, spool: AuditSpool, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while (spool.pending or len(_numbers(collector)) < spool.next_number - 1) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # anything sent twice would show now
    return _numbers(collector)


async def _stream_through_outages(tmp_path: Path, collector: Rsyslog, outage: str, cycles: int) -> tuple[list[int], int, AuditSender]:
    spool = AuditSpool(tmp_path / "spool")
    context = client_context(ca_file=str(collector.ca.cert_file))
    sender = AuditSender(spool, "localhost", collector.port, context, retry_max_seconds=0.5)
    task = asyncio.create_task(sender.run())
    producing = True

    async def produce() -> None:
        n = 0
        while producing:
            await asyncio.to_thread(spool.append, [f"e{n + i}" for i in range(5)], _message)
            n += 5
            sender.notify()
            await asyncio.sleep(0.01)

    producer = asyncio.create_task(produce())
    try:
        for _ in range(cycles):
            before = len(_numbers(collector))
            while len(_numbers(collector)) < before + 200:  # flowing again
                await asyncio.sleep(0.02)
            await asyncio.to_thread(collector.stop if outage == "stop" else collector.kill)
            await asyncio.sleep(1.0)  # the outage
            await asyncio.to_thread(collector.start)
        producing = False
        await producer
        numbers = await _settle(collector, spool)
        return numbers, spool.next_number - 1, sender
    finally:
        producing = False
        task.cancel()
        await asyncio.gather(task, producer, return_exceptions=True)
        spool.close()


def test_graceful_collector_stops_under_traffic_lose_and_repeat_nothing(tmp_path: Path, collector: Rsyslog) -> None:
    numbers, appended, _sender = asyncio.run(_stream_through_outages(tmp_path, collector, "stop", cycles=5))
    assert appended > 1000
    assert numbers == list(range(1, appended + 1))


def test_collector_killed_under_traffic_loses_nothing_in_order(tmp_path: Path, collector: Rsyslog) -> None:
    """SIGKILL: what rsyslog had read into memory and not written is beyond any sender's sight; what we measure."""
    numbers, appended, sender = asyncio.run(_stream_through_outages(tmp_path, collector, "kill", cycles=5))
    missing = sorted(set(range(1, appended + 1)) - set(numbers))
    repeated = len(numbers) - len(set(numbers))
    print(f"killed 5 times: {appended} sent, {len(missing)} missing, {repeated} repeated, "
          f"{sender.resent_batches} batch(es) sent again")  # fmt: skip
    assert not missing
    assert sorted(set(numbers)) == list(range(1, appended + 1))


async def _send_three(tmp_path: Path, collector: Rsyslog, context: ssl.SSLContext, wait: float) -> AuditSpool:
    spool = AuditSpool(tmp_path / "spool")
    if spool.next_number == 1:
        spool.append(["a", "b", "c"], _message)
    sender = AuditSender(spool, "localhost", collector.port, context, retry_max_seconds=0.5)
    task = asyncio.create_task(sender.run())
    deadline = time.monotonic() + wait
    while spool.pending and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return spool


def test_a_collector_asking_for_a_client_certificate_gets_ours_and_refuses_none(tmp_path: Path) -> None:
    ca = TrialCa.create(tmp_path / "ca")
    collector = Rsyslog(tmp_path / "rsyslog", ca, client_certificates=True)
    collector.start()
    try:
        anonymous = asyncio.run(_send_three(tmp_path / "anonymous", collector, client_context(ca_file=str(ca.cert_file)), 3))
        assert anonymous.pending == 3 and collector.messages() == []  # refused, kept in the spool
        anonymous.close()
        client = ca.issue(tmp_path / "ca", "client", "pacsgw", client=True)
        context = client_context(ca_file=str(ca.cert_file), cert_file=str(client.cert_file), key_file=str(client.key_file))
        shown = asyncio.run(_send_three(tmp_path / "anonymous", collector, context, 20))  # the same spool, sent now
        assert shown.pending == 0 and _numbers(collector) == [1, 2, 3]
        shown.close()
    finally:
        collector.kill()


def test_a_collector_with_a_certificate_of_another_ca_gets_nothing(tmp_path: Path, collector: Rsyslog) -> None:
    other = TrialCa.create(tmp_path / "other-ca")
    spool = asyncio.run(_send_three(tmp_path, collector, client_context(ca_file=str(other.cert_file)), 3))
    assert spool.pending == 3 and collector.messages() == []
    spool.close()
