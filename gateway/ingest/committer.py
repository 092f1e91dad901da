"""File a batch of validated instances: object store first, then the index, in one step the worker can retry.

Storing is idempotent (same key, same bytes; the index keeps the first row of
a UID), so a batch cut short by a crash or an outage is simply done again.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import Literal

from gateway.ingest.instance import ReceivedInstance
from gateway.metrics import GatewayMetrics
from storage.index.records import InstanceRecord
from storage.index.database import IndexDatabase, StoredInstance
from storage.object_store.base import ObjectExists, ObjectStore, ObjectStoreError, sha256_hex

log = logging.getLogger(__name__)

_VERIFY_ROUNDS = 3
_ORPHAN_POLL_SECONDS = 5.0  # within a commit; the rest of the grace period by retrying the batch


class Outcome(str, Enum):
    STORED = "stored"
    REPLACED = "replaced"
    DUPLICATE = "duplicate"


class Committer:
    """Files instances so that two nodes filing the same SOP Instance UID at once never leave a torn or mixed object.

    A new instance is put create-only (``if_absent``) and indexed create-only
    (the index keeps the first row of a UID, even one filed under other study
    or series UIDs, so another key: the loser deletes its own object). If
    another writer placed the key first, the stored object is compared by
    size and SHA-256: the same bytes are a duplicate (indexed, so a writer
    that died before its index commit is covered); different bytes follow
    ``on_duplicate`` — ``keep_first`` leaves an *indexed* stored object and
    its index entry alone, ``replace`` overwrites.

    Different bytes under the key while the UID is *not* indexed are an
    orphan: a writer filing it right now, or one that died or whose index
    commit failed (its spool files it again later), or a replica failover.
    It may have been acknowledged to its sender, so it is not overwritten at
    once: the batch is retried (after indexing the rest of it) for
    ``orphan_grace_seconds``, which leaves its writer time to index it (then
    ours is a duplicate). After that nobody indexed it and ours, which this
    node acknowledged, is put over it and indexed; a writer that files the
    orphan later finds ours indexed and keeps it (``keep_first``). So the
    instance is never left unindexed.

    The index records each object's SHA-256. Where a write was not atomic
    against another writer (a backend without conditional PUT, an S3
    multipart upload, a replacement), object and index are compared after the
    index commit and a writer whose bytes are on one side only fixes the
    other (``_verify``), so they agree whoever wins; on such a backend a
    retry or a spool replay that finds the UID indexed compares too.

    A committer files one batch at a time, through a store no other filer
    puts to (``ObjectStore.writer``), so a flush never answers for another
    filer's puts: spools filed side by side each have their own.
    """

    def __init__(
        self,
        store: ObjectStore,
        index: IndexDatabase,
        *,
        on_duplicate: Literal["keep_first", "replace"],
        upload_concurrency: int,
        metrics: GatewayMetrics | None = None,
        orphan_grace_seconds: float = 60.0,
    ) -> None:
        self.store = store
        self.index = index
        self.on_duplicate = on_duplicate
        self.metrics = metrics
        self.orphan_grace_seconds = orphan_grace_seconds
        self._orphans: dict[str, tuple[str, float]] = {}  # key -> (its object's SHA-256, when first found unindexed)
        self._pool = ThreadPoolExecutor(max_workers=upload_concurrency, thread_name_prefix="upload")
        self._filing = threading.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def commit(self, batch: Sequence[ReceivedInstance]) -> list[Outcome]:
        """Store and index the batch; raises ObjectStoreError or IndexDatabaseError to have it retried whole."""
        with self._filing:
            return self._commit(batch)

    def _commit(self, batch: Sequence[ReceivedInstance]) -> list[Outcome]:
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
        check: list[int] = []  # indexed, kept: written by a store without create-only puts, so compare
        stale_keys: list[str] = []
        for uid, i in chosen.items():
            if uid in existing:
                if self.on_duplicate == "keep_first":
                    outcomes[i] = Outcome.DUPLICATE
                    row = existing[uid]
                    same_key = row.checksum and row.object_key == batch[i].record.object_key
                    if same_key and not self.store.creates_atomically(len(batch[i].data)):
                        check.append(i)  # ours may have been written over the indexed one: compare
                    continue
                outcomes[i] = Outcome.REPLACED
                overwrite.append(i)
                if existing[uid].object_key != batch[i].record.object_key:
                    stale_keys.append(existing[uid].object_key)
            else:
                outcomes[i] = Outcome.STORED
                create.append(i)

        digests = dict(zip(create + overwrite, self._pool.map(lambda i: sha256_hex(batch[i].data), create + overwrite)))
        unsure = set(overwrite)  # written without a create-only guarantee: verified after the index commit
        check = self._mismatched(batch, check, existing, digests)
        unsure.update(check)
        refused: set[int] = set()
        for i, (taken, atomic) in zip(create, self._pool.map(lambda i: self._put(batch[i], digests[i], True), create)):
            if taken:
                refused.add(i)
            elif not atomic:
                unsure.add(i)
        list(self._pool.map(lambda i: self._put(batch[i], digests[i], False), overwrite))
        refused_keys = self.store.flush()  # the index may only name durable objects
        refused |= {i for i in create if batch[i].record.object_key in refused_keys}
        to_index = [i for i in create + overwrite if i not in refused]
        waiting: dict[str, str] = {}  # UID -> key holding an unindexed object with other bytes
        for i in sorted(refused):
            uid = batch[i].record.sop_instance_uid
            if self._resolve_conflict(batch[i], digests[i]):
                outcomes[i] = Outcome.DUPLICATE
                to_index.append(i)  # the same bytes: make sure the index names them
            elif self.on_duplicate == "replace":
                self._put(batch[i], digests[i], False)
                self.store.flush()
                outcomes[i] = Outcome.REPLACED
                to_index.append(i)
                unsure.add(i)
            elif uid in self.index.stored_instances([uid]):
                outcomes[i] = Outcome.DUPLICATE  # its writer indexed it since: the first one is kept
            elif self._orphan_waited(batch[i]):
                log.warning(
                    "instance %s: the object under its key has other bytes and was not indexed within %.0f s; "
                    "filing this one over it", uid, self.orphan_grace_seconds,
                )  # fmt: skip
                self._put(batch[i], digests[i], False)
                self.store.flush()
                outcomes[i] = Outcome.STORED
                to_index.append(i)
                unsure.add(i)
            else:
                outcomes[i] = Outcome.DUPLICATE  # if its writer indexes it in time; else the batch is retried
                waiting[uid] = batch[i].record.object_key

        started = time.perf_counter()
        creates = {batch[i].record.sop_instance_uid for i in to_index if i in create}
        records = {i: dataclasses.replace(batch[i].record, checksum=digests[i]) for i in to_index}
        # Vault entries go in even for duplicates: the same pseudonyms, so nothing changes if already there.
        lost = self.index.commit(list(records.values()), [entry for item in batch for entry in item.vault], creates=creates)
        if self.metrics:
            self.metrics.index_latency.observe(time.perf_counter() - started)
        relost = False
        for i in list(records):
            winner = lost.get(batch[i].record.sop_instance_uid)
            if winner is None:
                continue
            if winner.object_key == batch[i].record.object_key:
                unsure.add(i)  # one key, other bytes indexed: the stores' writes were not atomic, compare
                continue
            # Another filing indexed this UID first, under other study or series UIDs: our object is nobody's.
            del records[i]
            outcomes[i] = Outcome.DUPLICATE
            try:
                self.store.delete(batch[i].record.object_key)
            except ObjectStoreError as exc:
                log.warning("could not delete an object whose instance was indexed under another key: %s", exc)
            relost |= self.on_duplicate == "replace"
        for i in check:
            records.setdefault(i, dataclasses.replace(batch[i].record, checksum=digests[i]))
        verify = [i for i in records if i in unsure or not (self.store.create_only and self.on_duplicate == "keep_first")]
        if verify:
            self._verify([records[i] for i in verify], [batch[i] for i in verify])
        for key in stale_keys:  # a replacement moved to another study or series
            try:
                self.store.delete(key)
            except ObjectStoreError as exc:
                log.warning("could not delete a replaced object: %s", exc)
        if relost:  # replace: the filing that won the index goes first, ours replaces it on the retry
            raise ObjectStoreError("another node indexed an instance of this batch first; retrying to replace it")
        # Ours are indexed: a writer filing the same UIDs now (waiting for ours, maybe) indexes its own.
        if waiting and self._await_writers(waiting):
            raise ObjectStoreError(
                f"{len(waiting)} instance(s) wait for the writer of the unindexed object under their key; retrying"
            )
        return [o if o is not None else Outcome.DUPLICATE for o in outcomes]

    def _orphan_waited(self, item: ReceivedInstance) -> bool:
        """An unindexed object with other bytes holds the key: True once it has stayed so for the grace period."""
        key = item.record.object_key
        info = self.store.info(key)
        if info is None:
            raise ObjectStoreError("an object refused as present is gone; retrying")
        now = time.monotonic()
        seen = self._orphans.get(key)
        if seen is None or seen[0] != info.sha256:
            seen = self._orphans[key] = (info.sha256, now)
        if now - seen[1] < self.orphan_grace_seconds:
            return False
        del self._orphans[key]
        return True

    def _await_writers(self, waiting: dict[str, str]) -> dict[str, str]:
        """Give the writers of unindexed objects (UID -> key) a moment to index them; those still not indexed."""
        deadline = time.monotonic() + min(self.orphan_grace_seconds, _ORPHAN_POLL_SECONDS)
        while True:
            found = self.index.stored_instances(waiting)
            for uid in found:
                self._orphans.pop(waiting.pop(uid), None)
            if not waiting or time.monotonic() >= deadline:
                return waiting
            time.sleep(0.05)

    def _mismatched(
        self, batch: Sequence[ReceivedInstance], check: list[int], existing: dict[str, StoredInstance], digests: dict[int, str]
    ) -> list[int]:
        """Of instances indexed by a store without create-only puts: those whose object is not what the index names."""
        infos = list(self._pool.map(lambda i: self.store.info(batch[i].record.object_key), check))
        out = []
        for i, info in zip(check, infos):
            if info is None or info.sha256 != existing[batch[i].record.sop_instance_uid].checksum:
                digests[i] = sha256_hex(batch[i].data)
                out.append(i)
        return out

    def _put(self, item: ReceivedInstance, digest: str, if_absent: bool) -> tuple[bool, bool]:
        """Put the object; (a create-only put found the key taken, the write was atomic against other writers)."""
        started = time.perf_counter()
        try:
            atomic = self.store.put(item.record.object_key, item.data, sha256=digest, if_absent=if_absent)
        except ObjectExists:
            return True, True
        if self.metrics:
            self.metrics.store_latency.observe(time.perf_counter() - started)
        return False, bool(atomic)

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
            "replacing it" if self.on_duplicate == "replace" else "keeping the stored one if it is indexed",
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
        for attempt in range(_VERIFY_ROUNDS + 1):
            if attempt:  # two writers fixing each other's last change in step: out of step, one sees agreement
                time.sleep(random.uniform(0.0, 0.02 * attempt))
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
                elif row.checksum == record.checksum or not current:
                    if attempt < _VERIFY_ROUNDS:
                        log.warning("instance %s was overwritten or lost; writing it again", record.sop_instance_uid)
                        self._put(item, record.checksum, False)
                else:
                    continue  # neither side is ours: the writer of one of them checks after its write
                again.append((record, item))
            if not again:
                return
            if attempt == _VERIFY_ROUNDS:
                break  # the last look still disagrees: nothing written after it, so the retry compares again
            self.store.flush()
            if reindex:
                self.index.commit(reindex)
            pending = again
        raise ObjectStoreError("an object and its index entry kept being changed by another writer; retrying the batch")
