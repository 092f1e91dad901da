"""Fuzzy matching of person names (QIDO-RS fuzzymatching, negotiated C-FIND and MWL): any word, any order, no accents."""

from __future__ import annotations

import pytest

from storage.index.database import IndexDatabase
from storage.index.hierarchy import HierarchyQuery, Level
from storage.index.patients import Demographics
from storage.index.worklist import OrderRef, WorklistQuery, search
from tests.factory import Patient, ct_series
from tests.storage.conftest import records
from tests.storage.test_worklist import order, step

NAME = "Nguyễn^Thị Hồng"


def _names(index: IndexDatabase, value: str, fuzzy: bool) -> list[str]:
    query = HierarchyQuery(Level.STUDY, {"PatientName": value}, fuzzy_names=fuzzy)
    return sorted(row["PatientName"] for row in index.search_hierarchy(query))


@pytest.fixture
def named(index: IndexDatabase) -> IndexDatabase:
    for number, name in enumerate((NAME, "Hoàng^Văn Minh", "Trần^Hồng Nhung", "Lê^Thị Hoa")):
        index.commit(records(ct_series(1, size=16, patient=Patient(patient_id=f"MRN-F{number}", name=name))))
    return index


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("hong", [NAME, "Trần^Hồng Nhung"]),
        ("HỒNG", [NAME, "Trần^Hồng Nhung"]),
        ("nguyen hong", [NAME]),
        ("hong nguyen", [NAME]),
        ("Nguyễn^Hồng", [NAME]),
        ("thi", [NAME, "Lê^Thị Hoa"]),
        ("ho", [NAME, "Hoàng^Văn Minh", "Trần^Hồng Nhung", "Lê^Thị Hoa"]),
        ("hoa", ["Hoàng^Văn Minh", "Lê^Thị Hoa"]),
        ("ong", []),
        ("hong*", [NAME, "Trần^Hồng Nhung"]),
        ("100%", []),
    ],
)
def test_each_word_begins_some_word_of_the_name(named: IndexDatabase, value: str, found: list[str]) -> None:
    assert _names(named, value, fuzzy=True) == sorted(found)


def test_without_fuzzy_matching_nothing_changes(named: IndexDatabase) -> None:
    assert _names(named, "hong", fuzzy=False) == []
    assert _names(named, "nguyen^thi hong", fuzzy=False) == [NAME]
    assert _names(named, "Nguyen*", fuzzy=False) == [NAME]


def test_the_worklist_matches_names_fuzzily_when_asked(index: IndexDatabase) -> None:
    order(index, OrderRef(placer="P-F1"), step("F1"), patient=Demographics("MRN-F", "BV", NAME))
    order(index, OrderRef(placer="P-F2"), step("F2"), patient=Demographics("MRN-G", "BV", "Phạm^Minh"))
    with index.engine.connect() as conn:
        fuzzy = [r["accession_number"] for r in search(conn, WorklistQuery({"PatientName": "hong"}, fuzzy_names=True))]
        literal = [r["accession_number"] for r in search(conn, WorklistQuery({"PatientName": "hong"}))]
    assert (fuzzy, literal) == (["F1"], [])
