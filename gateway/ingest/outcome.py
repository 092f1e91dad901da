"""What ingest answers for one instance offered to it, whatever protocol offered it."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.statuses import StoreStatus
from storage.index.records import InstanceRecord

__all__ = ["StoreOutcome", "StoreStatus"]


@dataclass(frozen=True)
class StoreOutcome:
    """The status of one offered instance (a :class:`StoreStatus` value), a PHI-free reason when it was refused,
    the element at fault when known, and the record spooled (de-identified UIDs included) when it was stored;
    an instance the rules quarantine is answered Success (it is kept) with ``quarantined`` set."""

    status: int
    reason: str | None = None
    offending_tag: int | None = None
    record: InstanceRecord | None = None  # what was spooled (de-identified UIDs included)
    quarantined: bool = False  # Success, but set aside by the rules rather than stored

    @property
    def stored(self) -> bool:
        return self.status == StoreStatus.SUCCESS
