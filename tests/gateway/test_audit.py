"""The audit writer: events gathered and written in batches, none lost when the gateway stops."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.audit import AuditWriter
from storage.index.accounts import AccountStore
from storage.index.database import IndexDatabase


def test_events_gathered_when_the_gateway_stops_are_written(tmp_path: Path) -> None:
    index = IndexDatabase.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
    accounts = AccountStore(index.engine)
    writer = AuditWriter(accounts)

    async def stop_at_once() -> None:
        task = asyncio.create_task(writer.run())
        for n in range(3):
            writer.record(username="CT01", role="dicom", action="query", target=f"C-FIND {n}", source="127.0.0.1", outcome=0)
        await asyncio.sleep(0.02)  # the writer has taken the first event and gathers the rest
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await writer.flush()

    asyncio.run(stop_at_once())
    assert sorted(e["target"] for e in accounts.audit_trail(since=None, username="CT01", limit=10)) == ["C-FIND 0", "C-FIND 1", "C-FIND 2"]
    index.close()
