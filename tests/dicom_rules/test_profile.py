"""The profile table as data: every row, action code and option column of PS3.15 Table E.1-1 2024b."""

from __future__ import annotations

import json
from importlib.resources import files

from dicom_rules.attribute_types import type_table
from dicom_rules.profile import ACTION_CODES, Option, builtin_safe_private, method_codes, profile_table, resolve_code, safe_attribute_tags


def test_every_row_of_the_table_is_loaded() -> None:
    raw = json.loads(files("dicom_rules").joinpath("data", "ps3.15-table-E.1-1-2024b.json").read_text())
    table = profile_table()
    assert len(raw) == 621
    assert len(table.rows) + len(table.overlay_rows) + 2 == len(raw)  # plus the curve and private rows
    assert {row.basic for row in table.rows.values()} <= ACTION_CODES
    assert {"X/Z/U*", "X/Z/D", "Z/D", "X/D", "X/Z", "U", "D", "Z", "X"} <= {row.basic for row in table.rows.values()}
    assert table.private_row.options == {Option.RETAIN_SAFE_PRIVATE: "C"}


def test_options_override_the_basic_action() -> None:
    table = profile_table()
    study_date = table.rows[0x00080020]
    assert resolve_code(study_date, frozenset()) == "Z"
    assert resolve_code(study_date, frozenset({Option.RETAIN_LONGITUDINAL_FULL_DATES})) == "K"
    assert resolve_code(study_date, frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES})) == "C"
    allergies = table.rows[0x00102110]  # C under two options
    assert resolve_code(allergies, frozenset({Option.CLEAN_DESCRIPTORS, Option.RETAIN_PATIENT_CHARACTERISTICS})) == "C"
    sop_instance = table.rows[0x00080018]
    assert resolve_code(sop_instance, frozenset({Option.RETAIN_UIDS})) == "K"


def test_data_files_are_consistent() -> None:
    assert 0x00080070 in safe_attribute_tags()  # Manufacturer
    assert not safe_attribute_tags() & set(profile_table().rows)  # nothing safe-listed that the table lists
    assert all(entry.group & 1 for entry in builtin_safe_private())
    assert method_codes()["basic_profile"] == ("113100", "Basic Application Confidentiality Profile")
    assert len(method_codes()) == 13


def test_attribute_types_follow_the_iod() -> None:
    assert type_table("1.2.840.10008.5.1.4.1.1.2").type_of(0x00100020, 0) == 2  # Patient ID, CT
    assert type_table("1.2.840.10008.5.1.4.1.1.88.11").type_of(0x00080023, 0) == 1  # Content Date, Basic Text SR
    assert type_table("1.2.840.10008.5.1.4.1.1.2").type_of(0x00181000, 0) == 3  # Device Serial Number, CT
    assert type_table("1.2.3.4.5").type_of(0x00181000, 0) == 1  # unknown class: the strictest of all IODs
