"""The one ingest entry point: what it answers, and what it leaves in the spool."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dicom_rules.rules import RuleSet
from gateway.ingest import spool_record
from gateway.ingest.rules_stage import RulesStage
from gateway.ingest.service import IngestService, Source, SpoolSink
from gateway.ingest.spool import SpoolLog
from gateway.metrics import GatewayMetrics
from gateway.statuses import StoreStatus
from tests.factory import ct_series, to_bytes


def test_accept_spools_a_valid_instance_in_the_record_format_and_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    spool = SpoolLog(tmp_path / "spool", segment_bytes=1 << 20, max_bytes=1 << 30, min_free_bytes=0).open()
    rules = RulesStage(RuleSet(()), secret=None, quarantine_dir=None)
    ingest = IngestService(rules.receive, SpoolSink(spool), GatewayMetrics())
    [ds] = ct_series(1, size=16)

    async def offer() -> tuple:
        source = Source("dimse", "CT1", "10.1.2.3", str(ds.SOPClassUID), str(ds.SOPInstanceUID))
        return await ingest.accept(to_bytes(ds), source), await ingest.accept(b"not DICOM at all", Source("stow", "STOW-RS", "10.1.2.4"))

    try:
        stored, refused = asyncio.run(offer())
        assert stored.stored and stored.record is not None and stored.record.sop_instance_uid == ds.SOPInstanceUID
        assert refused.status == StoreStatus.CANNOT_UNDERSTAND and refused.reason and refused.record is None
        [record] = spool.read_batch(10, 1 << 30)
        assert record.meta["v"] == spool_record.VERSION
        spooled = spool_record.decode(record.meta)
        assert (spooled.record, spooled.calling_ae, spooled.peer) == (stored.record, "CT1", "10.1.2.3")
        assert spooled.received_at > 0
    finally:
        ingest.close()
        spool.close()
