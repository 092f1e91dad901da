"""What the forwarder hands a destination, and what it hears back: one protocol for DICOM and DICOMweb senders.

The forwarder (``gateway.forward.worker``) claims a study's waiting instances for one destination from the
queue, reads and de-identifies them, and gives them in order to the destination's sender as a batch. The
sender answers per instance; the forwarder marks each answer in the queue as it comes (an instance
acknowledged is never sent again, whatever happens to the rest of the batch).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol


@dataclass(frozen=True)
class Outgoing:
    """One instance on its way: the DICOM Part 10 bytes as this destination is to get them (de-identified
    under the destination's rule), with the UIDs and the transfer syntax those bytes carry."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    transfer_syntax_uid: str
    part10: bytes


class Result(str, Enum):
    DELIVERED = "delivered"  # the destination holds it (and, where asked, committed to keep it)
    RETRY = "retry"  # not taken this time for a reason that may pass (down, busy, timed out, out of resources)
    REFUSED = "refused"  # refused for a reason sending again will not change (bad SOP class, refused content)


@dataclass(frozen=True)
class Delivery:
    """The destination's answer for one instance; ``reason`` names the status or error, never patient data."""

    sop_instance_uid: str
    result: Result
    reason: str = ""


class Destination(Protocol):
    """A remote archive the forwarder sends to (C-STORE SCU, STOW-RS). ``deliver`` yields one Delivery per
    instance of the batch, in the order they are settled, as soon as each is settled; instances it yields
    nothing for before it raises or returns are treated as RETRY. It raises only for the whole destination
    (unreachable, refused the association): the reason is kept as the destination's last error."""

    name: str

    def deliver(self, batch: Sequence[Outgoing]) -> AsyncIterator[Delivery]: ...

    async def holds(self, sop_instance_uids: Sequence[str]) -> set[str] | None:
        """Which of these instances the destination already has (C-FIND or QIDO-RS), to settle sends left in
        doubt by a process that died mid-send; None when the destination cannot be asked."""
        ...

    async def close(self) -> None: ...
