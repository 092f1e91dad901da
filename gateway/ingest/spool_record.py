"""The spool record format: what ingest writes beside each spooled instance, and reads back to file it.

A record's meta is a JSON object with a version ``v``, the instance record,
the pseudonym mappings to keep with it, the calling AE title, the peer's
address and when it was received. Records written before the version field
existed are version 1. A record of a version this gateway does not know is
not guessed at: :func:`decode` raises :class:`SpoolRecordTooNew`, and the reader
leaves it in the spool (a newer gateway files it); an unreadable one is set aside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.index.records import InstanceRecord, VaultEntry

VERSION = 1


class SpoolRecordError(ValueError):
    """The meta of a spooled record cannot be read as a spooled instance."""


class SpoolRecordTooNew(Exception):
    """A record written by a newer gateway: kept in the spool, never set aside, until a gateway that reads it runs."""


@dataclass(frozen=True)
class SpooledInstance:
    """The description of one spooled instance (its bytes are the record's data)."""

    record: InstanceRecord
    vault: tuple[VaultEntry, ...]
    calling_ae: str
    peer: str
    received_at: float


def encode(instance: SpooledInstance) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "v": VERSION,
        "record": instance.record.to_dict(),
        "calling_ae": instance.calling_ae,
        "peer": instance.peer,
        "received_at": instance.received_at,
    }
    if instance.vault:
        meta["vault"] = [entry.to_dict() for entry in instance.vault]
    return meta


def decode(meta: dict[str, Any]) -> SpooledInstance:
    version = meta.get("v", 1) if isinstance(meta, dict) else None
    if isinstance(version, int) and version > VERSION:
        raise SpoolRecordTooNew(
            f"spool record version {version} is newer than this gateway reads ({VERSION}); it stays in the spool "
            "until a gateway that reads it files it"
        )
    if version != VERSION:
        raise SpoolRecordError(f"spool record version {version!r} is not known (this gateway reads {VERSION})")
    try:
        return SpooledInstance(
            record=InstanceRecord.from_dict(meta["record"]),
            vault=tuple(VaultEntry.from_dict(e) for e in meta.get("vault", ())),
            calling_ae=str(meta.get("calling_ae", "")),
            peer=str(meta.get("peer", "")),
            received_at=float(meta.get("received_at", 0.0)),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SpoolRecordError(f"spool record unreadable ({type(exc).__name__})") from None
