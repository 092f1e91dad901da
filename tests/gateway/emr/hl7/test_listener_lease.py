"""The listener losing its site lease (gateway.cluster): it takes no new connection, answers what it received and
closes each connection; started again (the lease taken back), it listens again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hl7.mllp import open_hl7_connection
from sqlalchemy import select

from gateway.audit import AuditWriter
from gateway.emr.hl7.handler import Hl7Handler
from gateway.emr.hl7.listener import Hl7Listener
from gateway.metrics import GatewayMetrics
from gateway.settings import Hl7Settings
from storage.index.accounts import AccountStore
from storage.index.database import IndexDatabase
from storage.index.schema import patients
from tests.gateway.emr.hl7.messages import Person, adt
from tests.peers.ports import free_port


def test_losing_the_lease_answers_what_was_received_then_closes(tmp_path: Path) -> None:
    index = IndexDatabase.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
    handler = Hl7Handler(index.engine, application="PACSGW", facility="RAD", stations={})
    listener = Hl7Listener(Hl7Settings(host="127.0.0.1", port=free_port()), handler, GatewayMetrics(), AuditWriter(AccountStore(index.engine), None))
    people = [Person(mrn=f"MRN-LEASE-{i}", family="Hồ", given=f"Thị {i}", citizen="", insurance="") for i in range(5)]

    async def scenario() -> tuple[int, bool]:
        await listener.start()
        port = listener.port
        reader, writer = await open_hl7_connection("127.0.0.1", port, encoding="utf-8")
        for person in people[:3]:
            writer.writeblock(adt("A08", person).encode())
        await writer.drain()
        acks = [await asyncio.wait_for(reader.readmessage(), 10) for _ in range(3)]
        writer.writeblock(adt("A08", people[3]).encode())  # under way as the lease goes: answered, or not at all
        await writer.drain()
        await listener.stop_accepting()
        assert not listener.listening
        try:
            acks.append(await asyncio.wait_for(reader.readmessage(), 10))
            assert await reader.read() == b""  # then closed by the listener
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass  # closed by the listener (reset: a message it had not read was dropped)
        writer.close()
        try:
            await open_hl7_connection("127.0.0.1", port, encoding="utf-8")
            refused = False
        except OSError:
            refused = True
        await listener.start()  # the lease taken back
        reader, writer = await open_hl7_connection("127.0.0.1", listener.port, encoding="utf-8")
        writer.writeblock(adt("A08", people[4]).encode())
        await writer.drain()
        acks.append(await asyncio.wait_for(reader.readmessage(), 10))
        writer.close()
        await listener.stop()
        return len(acks), refused

    try:
        answered, refused = asyncio.run(scenario())
        with index.engine.connect() as conn:
            stored = set(conn.execute(select(patients.c.patient_id).where(patients.c.patient_id.like("MRN-LEASE-%"))).scalars())
    finally:
        index.close()
    assert refused
    assert answered in (4, 5)
    assert {"MRN-LEASE-0", "MRN-LEASE-1", "MRN-LEASE-2", "MRN-LEASE-4"} <= stored
    assert ("MRN-LEASE-3" in stored) == (answered == 5)  # acknowledged exactly when applied
