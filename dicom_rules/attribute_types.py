"""Attribute Types (1, 2 or 3) per IOD, for the profile actions that depend on them.

``data/attribute_types.json`` holds, per IOD, the attributes the engine may
remove, empty or replace that are Type 1 or 2 there (built by
``scripts/build_attribute_types.py`` from the PS3.3 module tables). Top-level
attributes have their own Type; for attributes inside sequences the strictest
Type anywhere in the IOD is taken. An instance of an unknown SOP class gets
the strictest Type across all IODs, so the output stays valid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files


@dataclass(frozen=True)
class TypeTable:
    top: dict[int, int]
    nested: dict[int, int]

    def type_of(self, tag: int, depth: int) -> int:
        return (self.top if depth == 0 else self.nested).get(tag, 3)


def _merge(target: dict[int, int], source: dict[str, str]) -> None:
    for key, value in source.items():
        tag = int(key, 16)
        target[tag] = min(target.get(tag, 3), int(value))


@cache
def _document() -> dict:
    return json.loads(files("dicom_rules").joinpath("data", "attribute_types.json").read_text(encoding="utf-8"))


@cache
def _table_for_iod(iod: str | None) -> TypeTable:
    doc = _document()
    top: dict[int, int] = {}
    nested: dict[int, int] = {}
    for name, entry in doc["iods"].items():
        if iod is None or name == iod:
            _merge(top, entry["top"])
            _merge(nested, entry["nested"])
    return TypeTable(top, nested)


def type_table(sop_class_uid: str) -> TypeTable:
    return _table_for_iod(_document()["sop_classes"].get(sop_class_uid))
