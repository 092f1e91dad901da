"""The PS3.15 Annex E Basic Application Level Confidentiality Profile and its options, as data.

Table E.1-1 (``data/ps3.15-table-E.1-1-2024b.json``) gives each listed
attribute a basic action and, per option, the action that replaces it. An
:class:`ActionTable` is that table resolved for one choice of options: a
map from tag to action code (``X``, ``Z/D``, ``K``, ...). The codes that
depend on the attribute's Type are resolved per instance by the engine.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from enum import Enum
from functools import cache
from importlib.resources import files

from pydicom.datadict import tag_for_keyword

TABLE_FILE = "ps3.15-table-E.1-1-2024b.json"


class Option(str, Enum):
    """The profile options (PS3.15 E.3), named as in the rules file."""

    RETAIN_SAFE_PRIVATE = "retain_safe_private"
    RETAIN_UIDS = "retain_uids"
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
    RETAIN_LONGITUDINAL_FULL_DATES = "retain_longitudinal_full_dates"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "retain_longitudinal_modified_dates"
    CLEAN_DESCRIPTORS = "clean_descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean_structured_content"
    CLEAN_GRAPHICS = "clean_graphics"


# Table E.1-1 column of each option.
_COLUMNS = {
    Option.RETAIN_SAFE_PRIVATE: "rtnSafePrivOpt",
    Option.RETAIN_UIDS: "rtnUIDsOpt",
    Option.RETAIN_DEVICE_IDENTITY: "rtnDevIdOpt",
    Option.RETAIN_INSTITUTION_IDENTITY: "rtnInstIdOpt",
    Option.RETAIN_PATIENT_CHARACTERISTICS: "rtnPatCharsOpt",
    Option.RETAIN_LONGITUDINAL_FULL_DATES: "rtnLongFullDatesOpt",
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: "rtnLongModifDatesOpt",
    Option.CLEAN_DESCRIPTORS: "cleanDescOpt",
    Option.CLEAN_STRUCTURED_CONTENT: "cleanStructContOpt",
    Option.CLEAN_GRAPHICS: "cleanGraphOpt",
}

ACTION_CODES = frozenset({"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"})


@dataclass(frozen=True)
class TableRow:
    name: str
    basic: str
    options: dict[Option, str]


@dataclass(frozen=True)
class ProfileTable:
    """Table E.1-1: rows by tag, plus the repeating-group and private rows."""

    rows: dict[int, TableRow]
    overlay_rows: dict[int, TableRow]  # by element, for every group 60xx
    curve_row: TableRow  # every element of every group 50xx
    private_row: TableRow


def _row(raw: dict[str, str]) -> TableRow:
    basic = raw["basicProfile"]
    if basic not in ACTION_CODES:
        raise ValueError(f"unknown action {basic!r} for {raw['name']}")
    options = {option: raw[column] for option, column in _COLUMNS.items() if raw.get(column)}
    return TableRow(raw["name"], basic, options)


@cache
def profile_table() -> ProfileTable:
    raw_rows = json.loads(files("dicom_rules").joinpath("data", TABLE_FILE).read_text(encoding="utf-8"))
    rows: dict[int, TableRow] = {}
    overlay: dict[int, TableRow] = {}
    curve = private = None
    for raw in raw_rows:
        ident = raw["id"]
        if re.fullmatch("[0-9a-f]{8}", ident):
            rows[int(ident, 16)] = _row(raw)
        elif ident.startswith("60xx"):
            overlay[int(ident[4:], 16)] = _row(raw)
        elif ident == "50xxxxxx":
            curve = _row(raw)
        elif ident.startswith("gggg"):
            private = _row(raw)
        else:
            raise ValueError(f"unexpected row {ident!r} in {TABLE_FILE}")
    if curve is None or private is None:
        raise ValueError(f"{TABLE_FILE} lacks the curve or private attribute rows")
    return ProfileTable(rows, overlay, curve, private)


def resolve_code(row: TableRow, options: frozenset[Option]) -> str:
    """The action for a row under the chosen options: an option's K beats its C, and either beats the basic action."""
    chosen = [row.options[o] for o in options if o in row.options]
    if "K" in chosen:
        return "K"
    if "C" in chosen:
        return "C"
    return row.basic


@cache
def safe_attribute_tags() -> frozenset[int]:
    """Unlisted standard attributes kept as they are (``data/safe_attributes.toml``)."""
    data = tomllib.loads(files("dicom_rules").joinpath("data", "safe_attributes.toml").read_text(encoding="utf-8"))
    tags = set()
    for group in data.values():
        for keyword in group["keywords"]:
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise ValueError(f"safe_attributes.toml: unknown keyword {keyword!r}")
            tags.add(tag)
    return frozenset(tags)


@dataclass(frozen=True)
class SafePrivate:
    creator: str
    group: int
    element: int  # low byte of the element number


@cache
def builtin_safe_private() -> frozenset[SafePrivate]:
    data = tomllib.loads(files("dicom_rules").joinpath("data", "safe_private.toml").read_text(encoding="utf-8"))
    return frozenset(
        SafePrivate(entry["creator"], entry["group"], element)
        for entry in data["attribute"]
        for element in entry["elements"]
    )


@cache
def method_codes() -> dict[str, tuple[str, str]]:
    """CID 7050 codes by option name, plus ``basic_profile`` and ``clean_pixel_data``."""
    data = json.loads(files("dicom_rules").joinpath("data", "cid7050.json").read_text(encoding="utf-8"))
    return {name: (code, meaning) for name, (code, meaning) in data["codes"].items()}
