"""The DIMSE statuses the gateway answers with: one table, ``statuses.toml`` (PS3.4 and PS3.7 Annex C, 2024b).

Beside the adapters, not in ``gateway.dimse``: the ingest service answers C-STORE and STOW-RS alike with these
codes (STOW-RS reports them as Failure Reason) and must not depend on a protocol adapter. ``gateway.dimse.status``
re-exports every name.

The table is the only place a status code is written. The enums below give its rows the names the code uses;
their values come from the table, so a name the table lacks fails at import, not on the wire. Reading it is
reading a file of the package, nothing else.
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


@cache
def table() -> tuple[StatusEntry, ...]:
    text = resources.files(__package__).joinpath("statuses.toml").read_text(encoding="utf-8")
    rows = tomllib.loads(text)["status"]
    return tuple(
        StatusEntry(
            row["service"], row["name"], int(row["code"]), row["category"], row["meaning"], row["source"],
            tuple(row.get("errors", ())), bool(row.get("fallback", False)),
        )
        for row in rows
    )  # fmt: skip


def _code(service: str, name: str) -> int:
    for row in table():
        if row.service == service and row.name == name:
            return row.code
    raise KeyError(f"no status {name} for {service} in statuses.toml")


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


@cache
def _pending() -> frozenset[int]:
    return frozenset(row.code for row in table() if row.category == "pending")


def is_pending(code: int) -> bool:
    """A pending response: a final one follows."""
    return code in _pending()


def is_warning(code: int) -> bool:
    """A C-STORE answered with a warning (Bxxx: coerced, elements discarded...): stored, but not as sent."""
    return (code & 0xF000) == 0xB000


class StoreStatus(IntEnum):
    """C-STORE (and STOW-RS failure reasons, which carry the same codes)."""

    SUCCESS = _code("store", "SUCCESS")
    OUT_OF_RESOURCES = _code("store", "OUT_OF_RESOURCES")  # the sender should retry later
    DATASET_MISMATCH = _code("store", "DATASET_MISMATCH")
    CANNOT_UNDERSTAND = _code("store", "CANNOT_UNDERSTAND")
    MISSING_ATTRIBUTE = _code("store", "MISSING_ATTRIBUTE")
    INVALID_UID = _code("store", "INVALID_UID")
    REFUSED_SOP_CLASS = _code("store", "REFUSED_SOP_CLASS")
    PROCESSING_FAILURE = _code("store", "PROCESSING_FAILURE")
    NOT_AUTHORIZED = _code("store", "NOT_AUTHORIZED")  # a rule of the gateway refuses the instance


class FindStatus(IntEnum):
    """C-FIND, Query/Retrieve and Modality Worklist."""

    SUCCESS = _code("find", "SUCCESS")
    PENDING = _code("find", "PENDING")
    PENDING_OPTIONAL_KEYS_UNSUPPORTED = _code("find", "PENDING_OPTIONAL_KEYS_UNSUPPORTED")
    CANCELLED = _code("find", "CANCELLED")
    OUT_OF_RESOURCES = _code("find", "OUT_OF_RESOURCES")
    IDENTIFIER_MISMATCH = _code("find", "IDENTIFIER_MISMATCH")
    UNABLE_TO_PROCESS = _code("find", "UNABLE_TO_PROCESS")
    NOT_AUTHORIZED = _code("find", "NOT_AUTHORIZED")


class RetrieveStatus(IntEnum):
    """C-MOVE and C-GET."""

    SUCCESS = _code("retrieve", "SUCCESS")
    PENDING = _code("retrieve", "PENDING")
    CANCELLED = _code("retrieve", "CANCELLED")
    SUB_OPERATIONS_FAILED = _code("retrieve", "SUB_OPERATIONS_FAILED")  # warning: one or more sub-operations failed
    OUT_OF_RESOURCES = _code("retrieve", "OUT_OF_RESOURCES")
    UNKNOWN_DESTINATION = _code("retrieve", "UNKNOWN_DESTINATION")
    UNABLE_TO_PERFORM_SUB_OPERATIONS = _code("retrieve", "UNABLE_TO_PERFORM_SUB_OPERATIONS")
    IDENTIFIER_MISMATCH = _code("retrieve", "IDENTIFIER_MISMATCH")
    UNABLE_TO_PROCESS = _code("retrieve", "UNABLE_TO_PROCESS")
    NOT_AUTHORIZED = _code("retrieve", "NOT_AUTHORIZED")


class NStatus(IntEnum):
    """MPPS N-CREATE and N-SET."""

    SUCCESS = _code("mpps", "SUCCESS")
    INVALID_ATTRIBUTE_VALUE = _code("mpps", "INVALID_ATTRIBUTE_VALUE")
    PROCESSING_FAILURE = _code("mpps", "PROCESSING_FAILURE")
    DUPLICATE_SOP_INSTANCE = _code("mpps", "DUPLICATE_SOP_INSTANCE")
    NO_SUCH_SOP_INSTANCE = _code("mpps", "NO_SUCH_SOP_INSTANCE")
    INVALID_SOP_INSTANCE = _code("mpps", "INVALID_SOP_INSTANCE")
    MISSING_ATTRIBUTE = _code("mpps", "MISSING_ATTRIBUTE")
    SOP_CLASS_NOT_SUPPORTED = _code("mpps", "SOP_CLASS_NOT_SUPPORTED")
    NOT_AUTHORIZED = _code("mpps", "NOT_AUTHORIZED")
    MAY_NO_LONGER_BE_UPDATED = _code("mpps", "MAY_NO_LONGER_BE_UPDATED")  # the step is COMPLETED or DISCONTINUED


class GeneralStatus(IntEnum):
    """C-ECHO and operations the gateway does not serve."""

    SUCCESS = _code("general", "SUCCESS")
    PROCESSING_FAILURE = _code("general", "PROCESSING_FAILURE")
    SOP_CLASS_NOT_SUPPORTED = _code("general", "SOP_CLASS_NOT_SUPPORTED")
    UNRECOGNIZED_OPERATION = _code("general", "UNRECOGNIZED_OPERATION")


NAMES: dict[str, type[IntEnum]] = {
    "store": StoreStatus, "find": FindStatus, "retrieve": RetrieveStatus, "mpps": NStatus, "general": GeneralStatus,
}  # fmt: skip
