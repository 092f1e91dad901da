"""The DIMSE statuses the gateway answers with: the one table lives in ``gateway.statuses`` (beside the adapters,
so that ingest names store statuses without depending on DIMSE); re-exported here for the DIMSE modules."""

from __future__ import annotations

from gateway.statuses import (
    CATEGORIES,
    ERROR_IDS,
    NAMES,
    PENDING,
    SERVICES,
    FindStatus,
    GeneralStatus,
    NStatus,
    RetrieveStatus,
    StatusEntry,
    StoreStatus,
    entries,
    fallback,
    for_error,
    is_pending,
    is_warning,
    table,
)

__all__ = [
    "CATEGORIES", "ERROR_IDS", "NAMES", "PENDING", "SERVICES", "FindStatus", "GeneralStatus", "NStatus", "RetrieveStatus", "StatusEntry",
    "StoreStatus", "entries", "fallback", "for_error", "is_pending", "is_warning", "table",
]  # fmt: skip
