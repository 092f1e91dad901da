"""The index under test, on SQLite (embedded default) and on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.ingest.instance import parse_instance
from storage.index.database import IndexDatabase
from storage.index.records import InstanceRecord
from tests.factory import to_bytes


@pytest.fixture(params=["sqlite", "postgresql"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IndexDatabase]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database(f"idx_{uuid.uuid4().hex[:10]}")
    db = IndexDatabase.open(url)
    yield db
    db.close()


def records(datasets) -> list[InstanceRecord]:
    return [parse_instance(to_bytes(ds)).record for ds in datasets]
