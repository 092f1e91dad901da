"""The DIMSE statuses the gateway answers with: one table, ``statuses.toml`` (PS3.4 and PS3.7 Annex C, 2024b).

Beside the adapters, not in ``gateway.dimse``: the ingest service answers C-STORE and STOW-RS alike with these
codes (STOW-RS reports them as Failure Reason) and must not depend on a protocol adapter. ``gateway.dimse.status``
re-exports every name.

The table is the data, with each status's meaning and where the standard says so; the enums below are the names
the code uses, their values written out. tests/gateway/dimse/test_dispatch.py holds the two equal, both ways.
The table is read on first use (for dispatch: which status answers which failure), never at import.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from importlib import resources

SERVICES = ("store", "find", "retrieve", "mpps", "general")
CATEGORIES = ("success", "pending", "cancel", "warning", "failure")


@dataclass(frozen=True)
class StatusEntry:
    """One row of the status table: a status one service answers, what it means and where the standard says so."""

    service: str
    name: str
    code: int
    category: str
    meaning: str
    source: str
    errors: tuple[str, ...] = ()  # the named exceptions (gateway.dimse.errors) answered with it
    fallback: bool = False  # the service's answer to a failure of the gateway's own
    range: str = ""  # the range the standard leaves open ("Cxxx") that the code is the gateway's choice in
    error_id: int | None = None  # Error ID (0000,0903) the standard pairs with the code
    error_comment: str = ""  # the standard's Error Comment (0000,0902) for that Error ID


@cache
def table() -> tuple[StatusEntry, ...]:
    text = resources.files(__package__).joinpath("statuses.toml").read_text(encoding="utf-8")
    rows = tomllib.loads(text)["status"]
    return tuple(
        StatusEntry(
            row["service"], row["name"], int(row["code"]), row["category"], row["meaning"], row["source"],
            tuple(row.get("errors", ())), bool(row.get("fallback", False)), row.get("range", ""),
            None if row.get("error_id") is None else int(row["error_id"]), row.get("error_comment", ""),
        )
        for row in rows
    )  # fmt: skip


def entries(service: str) -> tuple[StatusEntry, ...]:
    return tuple(row for row in table() if row.service == service)


def fallback(service: str) -> StatusEntry:
    """The status a service answers when the gateway itself fails (exactly one per service)."""
    (row,) = (row for row in entries(service) if row.fallback)
    return row


def for_error(service: str, names: Iterable[str]) -> StatusEntry | None:
    """The row that lists the first of ``names`` (an exception's class and its bases, most specific first)."""
    rows = entries(service)
    for name in names:
        for row in rows:
            if name in row.errors:
                return row
    return None


PENDING = frozenset({0xFF00, 0xFF01})  # the table's pending rows (C-FIND FF00/FF01, C-MOVE/C-GET FF00)


def is_pending(code: int) -> bool:
    """A pending response: a final one follows."""
    return code in PENDING


def is_warning(code: int) -> bool:
    """A C-STORE answered with a warning (Bxxx: coerced, elements discarded...): stored, but not as sent."""
    return (code & 0xF000) == 0xB000


class StoreStatus(IntEnum):
    """C-STORE (and STOW-RS failure reasons, which carry the same codes)."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700  # the sender should retry later
    DATASET_MISMATCH = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    MISSING_ATTRIBUTE = 0xC001
    INVALID_UID = 0xC002
    PROCESSING_FAILURE = 0x0110
    REFUSED_SOP_CLASS = 0x0122
    NOT_AUTHORIZED = 0x0124  # a rule of the gateway refuses the instance


class FindStatus(IntEnum):
    """C-FIND, Query/Retrieve and Modality Worklist."""

    SUCCESS = 0x0000
    PENDING = 0xFF00
    PENDING_OPTIONAL_KEYS_UNSUPPORTED = 0xFF01
    CANCELLED = 0xFE00
    OUT_OF_RESOURCES = 0xA700
    IDENTIFIER_MISMATCH = 0xA900
    UNABLE_TO_PROCESS = 0xC000
    NOT_AUTHORIZED = 0x0124


class RetrieveStatus(IntEnum):
    """C-MOVE and C-GET."""

    SUCCESS = 0x0000
    PENDING = 0xFF00
    CANCELLED = 0xFE00
    SUB_OPERATIONS_FAILED = 0xB000  # warning: one or more sub-operations failed
    UNABLE_TO_CALCULATE_MATCHES = 0xA701  # out of resources: the index cannot list the matches, or too many
    UNABLE_TO_PERFORM_SUB_OPERATIONS = 0xA702  # out of resources: no sub-operation could be performed
    UNKNOWN_DESTINATION = 0xA801
    IDENTIFIER_MISMATCH = 0xA900
    UNABLE_TO_PROCESS = 0xC000
    NOT_AUTHORIZED = 0x0124


class NStatus(IntEnum):
    """MPPS N-CREATE and N-SET."""

    SUCCESS = 0x0000
    INVALID_ATTRIBUTE_VALUE = 0x0106
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_SOP_INSTANCE = 0x0112
    INVALID_SOP_INSTANCE = 0x0117
    MISSING_ATTRIBUTE = 0x0120
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NOT_AUTHORIZED = 0x0124
    # the step is COMPLETED or DISCONTINUED: Processing Failure with Error ID A710 (ERROR_IDS), an alias of
    # PROCESSING_FAILURE on the wire
    MAY_NO_LONGER_BE_UPDATED = 0x0110


class GeneralStatus(IntEnum):
    """C-ECHO and operations the gateway does not serve."""

    SUCCESS = 0x0000
    PROCESSING_FAILURE = 0x0110
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    UNRECOGNIZED_OPERATION = 0x0211


NAMES: dict[str, type[IntEnum]] = {
    "store": StoreStatus, "find": FindStatus, "retrieve": RetrieveStatus, "mpps": NStatus, "general": GeneralStatus,
}  # fmt: skip

# (service, name) -> Error ID (0000,0903) sent with the code; a status without one has none
ERROR_IDS: dict[tuple[str, str], int] = {("mpps", "MAY_NO_LONGER_BE_UPDATED"): 0xA710}
