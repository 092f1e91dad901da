"""File a batch of validated instances: object store first, then the index, in one step the worker can retry.

Storing is idempotent (same key, same bytes; index upserts), so a batch cut
short by a crash or an outage is simply done again.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import Literal

from gateway.ingest.instance import ReceivedInstance
from gateway.metrics import GatewayMetrics
from storage.index.records import InstanceRecord
from storage.index.database import IndexDatabase
from storage.object_store.base import ObjectExists, ObjectStore, ObjectStoreError, sha256_hex

log = logging.getLogger(__name__)

_VERIFY_ROUNDS = 3


class Outcome(str, Enum):
    STORED = "stored"
    REPLACED = "replaced"
    DUPLICATE = "duplicate"


class Committer:
    """Files instances so that two nodes filing the same SOP Instance UID at once never leave a torn or mixed object.

    A new instance is put create-only (``if_absent``). If another writer
    placed the key first, the stored object is compared by size and SHA-256:
    the same bytes are a duplicate (indexed, so a writer that died before its
    index commit is covered); different bytes follow ``on_duplicate`` —
    ``keep_first`` leaves the stored object and its index entry alone,
    ``replace`` overwrites. The index records each object's SHA-256. Where a
    write was not atomic against another writer (a backend without
    conditional PUT, or a replacement), object and index are compared after
    the index commit and a writer whose bytes are on one side only fixes the
    other (``_verify``), so they agree whoever wins.
    """

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
        create: list[int] = []  # new to the index: put create-only
        overwrite: list[int] = []  # replacements: put over what is there
        stale_keys: list[str] = []
        for uid, i in chosen.items():
            if uid in existing:
                if self.on_duplicate == "keep_first":
                    outcomes[i] = Outcome.DUPLICATE
                    continue
                outcomes[i] = Outcome.REPLACED
                overwrite.append(i)
                if existing[uid].object_key != batch[i].record.object_key:
                    stale_keys.append(existing[uid].object_key)
            else:
                outcomes[i] = Outcome.STORED
                create.append(i)

        digests = dict(zip(create + overwrite, self._pool.map(lambda i: sha256_hex(batch[i].data), create + overwrite)))
        refused = set(
            i for i, taken in zip(create, self._pool.map(lambda i: self._put(batch[i], digests[i], True), create)) if taken
        )
        list(self._pool.map(lambda i: self._put(batch[i], digests[i], False), overwrite))
        refused_keys = self.store.flush()  # the index may only name durable objects
        refused |= {i for i in create if batch[i].record.object_key in refused_keys}
        to_index = [i for i in create + overwrite if i not in refused]
        # A create-only put that succeeded is safe from writers that keep the first; not from one that replaces.
        atomic = self.store.create_only and self.on_duplicate == "keep_first"
        for i in sorted(refused):
            if self._resolve_conflict(batch[i], digests[i]):
                outcomes[i] = Outcome.DUPLICATE
                to_index.append(i)  # the same bytes: make sure the index names them
            elif self.on_duplicate == "keep_first":
                outcomes[i] = Outcome.DUPLICATE
                uid = batch[i].record.sop_instance_uid
                if uid not in self.index.stored_instances([uid]):  # its writer is filing it, or died and its spool will
                    log.warning(
                        "instance %s: the stored object with other bytes is not indexed yet; if no node's spool holds "
                        "it, re-send the instance with ingest.on_duplicate = replace", uid,
                    )  # fmt: skip
            else:
                self._put(batch[i], digests[i], False)
                self.store.flush()
                outcomes[i] = Outcome.REPLACED
                to_index.append(i)

        started = time.perf_counter()
        records = [dataclasses.replace(batch[i].record, checksum=digests[i]) for i in to_index]
        # Vault entries go in even for duplicates: the same pseudonyms, so nothing changes if already there.
        self.index.commit(records, [entry for item in batch for entry in item.vault])
        if self.metrics:
            self.metrics.index_latency.observe(time.perf_counter() - started)
        if not atomic and records:
            self._verify(records, [batch[i] for i in to_index])
        for key in stale_keys:  # a replacement moved to another study or series
            try:
                self.store.delete(key)
            except ObjectStoreError as exc:
                log.warning("could not delete a replaced object: %s", exc)
        return [o if o is not None else Outcome.DUPLICATE for o in outcomes]

    def _put(self, item: ReceivedInstance, digest: str, if_absent: bool) -> bool:
        """Put the object; True when a create-only put found the key taken."""
        started = time.perf_counter()
        try:
            self.store.put(item.record.object_key, item.data, sha256=digest, if_absent=if_absent)
        except ObjectExists:
            return True
        if self.metrics:
            self.metrics.store_latency.observe(time.perf_counter() - started)
        return False

    def _resolve_conflict(self, item: ReceivedInstance, digest: str) -> bool:
        """Another writer placed the key first: True if it holds the same bytes as ours."""
        info = self.store.info(item.record.object_key)
        if info is None:  # removed since (a replacement that moved it): have the batch retried
            raise ObjectStoreError("an object refused as present is gone; retrying")
        if info.size == len(item.data) and info.sha256 == digest:
            return True
        log.warning(
            "instance %s already stored with other bytes (%d against %d bytes); %s",
            item.record.sop_instance_uid, info.size, len(item.data),
            "kept the stored one" if self.on_duplicate == "keep_first" else "replacing it",
        )  # fmt: skip
        return False

    def _verify(self, records: list[InstanceRecord], items: list[ReceivedInstance]) -> None:
        """Writes that were not atomic against another writer: make object and index agree before reporting.

        Whoever's bytes are on one side and not the other fixes it (the index
        names ours: put ours again; the object holds ours: index ours again),
        and looks again. The last writer always has its bytes on one side and
        checks after its last write, so the last look of all sees them agree.
        """
        pending = list(zip(records, items))
        for _ in range(_VERIFY_ROUNDS):
            indexed = self.index.stored_instances(record.sop_instance_uid for record, _ in pending)
            again, reindex = [], []
            for record, item in pending:
                row = indexed.get(record.sop_instance_uid)
                if row is None or row.object_key != record.object_key:
                    continue  # removed or moved since, by a later filing that checks on its own
                info = self.store.info(record.object_key)
                current = info.sha256 if info is not None else ""
                if current == row.checksum:
                    continue
                if current == record.checksum:
                    reindex.append(record)
                elif row.checksum == record.checksum:
                    log.warning("instance %s was overwritten by another writer; writing it again", record.sop_instance_uid)
                    self._put(item, record.checksum, False)
                else:
                    continue  # neither side is ours: the writer of one of them checks after its write
                again.append((record, item))
            if not again:
                return
            self.store.flush()
            if reindex:
                self.index.commit(reindex)
            pending = again
        raise ObjectStoreError("an object and its index entry kept being changed by another writer; retrying the batch")
