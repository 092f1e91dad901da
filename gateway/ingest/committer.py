"""File a batch of validated instances: object store first, then the index, in one step the worker can retry.

Storing is idempotent (same key, same bytes; index upserts), so a batch cut
short by a crash or an outage is simply done again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import Literal

from gateway.ingest.instance import ReceivedInstance
from gateway.metrics import GatewayMetrics
from storage.index.database import IndexDatabase
from storage.object_store.base import ObjectStore, ObjectStoreError

log = logging.getLogger(__name__)


class Outcome(str, Enum):
    STORED = "stored"
    REPLACED = "replaced"
    DUPLICATE = "duplicate"


class Committer:
    def __init__(
        self,
        store: ObjectStore,
        index: IndexDatabase,
        *,
        on_duplicate: Literal["keep_first", "replace"],
        upload_concurrency: int,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.store = store
        self.index = index
        self.on_duplicate = on_duplicate
        self.metrics = metrics
        self._pool = ThreadPoolExecutor(max_workers=upload_concurrency, thread_name_prefix="upload")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def commit(self, batch: Sequence[ReceivedInstance]) -> list[Outcome]:
        """Store and index the batch; raises ObjectStoreError or IndexDatabaseError to have it retried whole."""
        outcomes: list[Outcome | None] = [None] * len(batch)
        chosen: dict[str, int] = {}
        for i, item in enumerate(batch):
            uid = item.record.sop_instance_uid
            if uid in chosen:
                if self.on_duplicate == "keep_first":
                    outcomes[i] = Outcome.DUPLICATE
                    continue
                outcomes[chosen[uid]] = Outcome.DUPLICATE
            chosen[uid] = i
        existing = self.index.stored_instances(chosen)
        to_store: list[int] = []
        stale_keys: list[str] = []
        for uid, i in chosen.items():
            if uid in existing:
                if self.on_duplicate == "keep_first":
                    outcomes[i] = Outcome.DUPLICATE
                    continue
                outcomes[i] = Outcome.REPLACED
                if existing[uid].object_key != batch[i].record.object_key:
                    stale_keys.append(existing[uid].object_key)
            else:
                outcomes[i] = Outcome.STORED
            to_store.append(i)

        list(self._pool.map(self._put, [batch[i] for i in to_store]))
        self.store.flush()  # the index may only name durable objects
        started = time.perf_counter()
        # Vault entries go in even for duplicates: the same pseudonyms, so nothing changes if already there.
        self.index.commit([batch[i].record for i in to_store], [entry for item in batch for entry in item.vault])
        if self.metrics:
            self.metrics.index_latency.observe(time.perf_counter() - started)
        for key in stale_keys:  # a replacement moved to another study or series
            try:
                self.store.delete(key)
            except ObjectStoreError as exc:
                log.warning("could not delete a replaced object: %s", exc)
        return [o if o is not None else Outcome.DUPLICATE for o in outcomes]

    def _put(self, item: ReceivedInstance) -> None:
        started = time.perf_counter()
        self.store.put(item.record.object_key, item.data)
        if self.metrics:
            self.metrics.store_latency.observe(time.perf_counter() - started)
