"""Sorting search results on an attribute, with the level's own order breaking ties."""

from __future__ import annotations

import pytest

from storage.index.database import IndexDatabase
from storage.index.hierarchy import HierarchyQuery, Level, parse_order
from storage.index.matching import InvalidQuery
from tests.factory import Patient, ct_series
from tests.storage.conftest import records

NAMES = ["Nguyễn^Văn An", "Đặng^Thị Thu", "Bùi^Minh", "Ân^Hà"]  # as read: Ân, Bùi, Đặng, Nguyễn


def test_parse_order() -> None:
    assert parse_order(Level.STUDY, "PatientName, -StudyDate") == (("PatientName", False), ("StudyDate", True))
    assert parse_order(Level.SERIES, "-NumberOfSeriesRelatedInstances") == (("NumberOfSeriesRelatedInstances", True),)
    assert parse_order(Level.STUDY, "StudyStatusID") == (("StudyStatusID", False),)
    for bad, reason in [
        ("PatientWeight", "cannot sort study results by 'PatientWeight'"),
        ("SeriesNumber", "cannot sort study results by 'SeriesNumber'"),  # a lower level
        ("TransferSyntaxUID", "cannot sort"),
        ("", "cannot sort study results by ''"),
        ("StudyDate,-StudyDate", "given twice"),
    ]:
        with pytest.raises(InvalidQuery, match=reason):
            parse_order(Level.STUDY, bad)


def test_names_sort_without_accents_and_ties_keep_a_stable_order(index: IndexDatabase) -> None:
    datasets = []
    for n, name in enumerate(NAMES):
        patient = Patient(patient_id=f"MRN-{n}", name=name, citizen_id=f"00100000000{n}")
        datasets += ct_series(1 + n, size=16, patient=patient, study_date="20240301" if n < 2 else "20240302")
    index.commit(records(datasets))

    def names(*order: tuple[str, bool], limit: int | None = None, offset: int = 0) -> list[str]:
        rows = index.search_hierarchy(HierarchyQuery(Level.STUDY, order=order, limit=limit, offset=offset))
        return [row["PatientName"] for row in rows]

    assert names(("PatientName", False)) == ["Ân^Hà", "Bùi^Minh", "Đặng^Thị Thu", "Nguyễn^Văn An"]
    assert names(("PatientName", True)) == ["Nguyễn^Văn An", "Đặng^Thị Thu", "Bùi^Minh", "Ân^Hà"]
    assert names(("NumberOfStudyRelatedInstances", True)) == ["Ân^Hà", "Bùi^Minh", "Đặng^Thị Thu", "Nguyễn^Văn An"]
    by_date = names(("StudyDate", False))
    assert set(by_date[:2]) == {"Nguyễn^Văn An", "Đặng^Thị Thu"}
    paged = [name for offset in range(4) for name in names(("StudyDate", False), limit=1, offset=offset)]
    assert paged == by_date  # ties broken the same way on every page
