"""Helpers for the index tests; the ``index`` fixture (SQLite and PostgreSQL) is in the root conftest."""

from __future__ import annotations

from gateway.ingest.instance import parse_instance
from storage.index.records import InstanceRecord
from tests.factory import to_bytes


def records(datasets) -> list[InstanceRecord]:
    return [parse_instance(to_bytes(ds)).record for ds in datasets]
