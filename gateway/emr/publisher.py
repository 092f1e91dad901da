"""Stable-study detection: a study with no new instance for ``stable_seconds`` is announced in the outbox.

A periodic task asks the index for studies that changed and then stayed quiet,
and announces each (one waiting ``imaging-study`` message per study at most),
then wakes the outbox worker. Instances arriving later make the study change
again, so it is announced again once quiet. It only looks at studies changed
since shortly before the newest one announced, so it stays cheap on a large
archive; at first start it announces every study already indexed, oldest first.

In a cluster the scan is a singleton: only the process holding the site lease
``stable-study-scan`` looks (``may_scan``); on taking the lease over it
resumes from the newest state announced by anyone. Announcing is idempotent
besides (storage.index.study_publications), so no study state is announced
twice even by two scans at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable

from storage.index.study_publications import StudyPublications

log = logging.getLogger(__name__)

BATCH = 200
PRUNE_SECONDS = 3600.0
# Studies are scanned from this long before the newest announced state: an instance indexed by another process
# (the import command) may carry a slightly older time than one already seen.
LOOKBACK = dt.timedelta(minutes=5)


class StablePublisher:
    def __init__(
        self,
        publications: StudyPublications,
        *,
        stable_seconds: float,
        on_announce: Callable[[], None] = lambda: None,
        may_scan: Callable[[], bool] = lambda: True,
    ) -> None:
        self.publications = publications
        self.may_scan = may_scan
        self.stable = dt.timedelta(seconds=stable_seconds)
        self.on_announce = on_announce
        # At least once a second (an indexed query): the lag after a study turns stable stays under that.
        self.poll_seconds = min(max(stable_seconds / 4, 0.2), 1.0)
        self._since: dt.datetime | None = None
        self._started = False
        self._prune_at = 0.0  # monotonic: when the old idempotency keys are forgotten next

    async def run(self) -> None:
        while True:
            try:
                announced = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("looking for stable studies failed; trying again")
                announced = 0
            if announced < BATCH:
                await asyncio.sleep(self.poll_seconds)

    async def run_once(self, now: dt.datetime | None = None) -> int:
        """Announce the studies stable at ``now``; how many."""
        if not self.may_scan():  # another process scans; where it got to is read again if this one takes over
            self._started = False
            return 0
        if time.monotonic() >= self._prune_at:
            self._prune_at = time.monotonic() + PRUNE_SECONDS
            await asyncio.to_thread(self.publications.forget_old_keys)
        if not self._started:
            await asyncio.to_thread(self.publications.ensure_index)
            last = await asyncio.to_thread(self.publications.last_announced)
            self._since = last - LOOKBACK if last else None
            self._started = True
        cutoff = (now or dt.datetime.now(dt.timezone.utc)) - self.stable
        stable = await asyncio.to_thread(self.publications.stable, cutoff=cutoff, since=self._since, limit=BATCH)
        if not stable:
            return 0
        pks = await asyncio.to_thread(self.publications.announce, stable)
        newest = max(updated for _, updated in stable) - LOOKBACK
        self._since = newest if self._since is None else max(self._since, newest)
        if not pks:
            return 0
        log.info("%d stable stud%s announced (outbox rows %s)", len(pks), "y" if len(pks) == 1 else "ies",
                 ",".join(map(str, pks[:10])) + ("..." if len(pks) > 10 else ""))  # fmt: skip
        self.on_announce()
        return len(stable)
