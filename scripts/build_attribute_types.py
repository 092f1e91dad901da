"""Build ``dicom_rules/data/attribute_types.json`` from the PS3.3 module tables.

The de-identification profile's compound actions (X/Z, X/D, Z/D, X/Z/D,
X/Z/U*) depend on whether an attribute is Type 1, 2 or 3 in the IOD of the
instance. The gateway keeps, for every IOD, the attributes whose Type can
change what the engine does (those with a compound action and those the
engine must clean although the profile does not list them), and only when
they are Type 1 or 2; everything else counts as Type 3.

The PS3.3 tables are read from the copy that highdicom ships (``_standard``
in the highdicom package). Run this only to refresh the data file:

    pip install highdicom && python scripts/build_attribute_types.py
"""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

from pydicom.datadict import dictionary_VR, tag_for_keyword

DATA = Path(__file__).resolve().parent.parent / "dicom_rules" / "data"
# Unlisted values of these VRs are cleaned by the engine, which needs their Type to stay valid.
# (Unlisted UIDs are replaced, never removed, and unlisted sequences are cleaned item by item.)
IDENTITY_VRS = {"PN", "LO", "LT", "ST", "UT", "SH", "UC", "UR", "AE", "DA", "DT", "TM", "AS"}


def _load(name: str) -> dict:
    return json.loads(files("highdicom").joinpath("_standard", name).read_text())


def _profile_tags() -> tuple[set[int], set[int]]:
    """Tags with a compound action, and every tag the profile lists (repeating groups aside)."""
    listed: dict[int, str] = {}
    for row in json.loads((DATA / "ps3.15-table-E.1-1-2024b.json").read_text()):
        if re.fullmatch("[0-9a-f]{8}", row["id"]):
            listed[int(row["id"], 16)] = row["basicProfile"]
    return {tag for tag, code in listed.items() if "/" in code}, set(listed)


def main() -> None:
    compound, listed = _profile_tags()
    modules = _load("module_attribute_map.json")
    iods = _load("iod_module_map.json")
    sop_classes = _load("sop_class_iod_map.json")

    def strictest(current: str | None, new: str) -> str:
        return new if current is None or new < current else current

    out_iods: dict[str, dict[str, dict[str, str]]] = {}
    for iod, module_refs in iods.items():
        top: dict[str, str] = {}
        nested: dict[str, str] = {}
        for ref in module_refs:
            for attribute in modules.get(ref["key"], ()):
                tag = tag_for_keyword(attribute["keyword"])
                if tag is None:
                    continue
                kind = attribute["type"][0]  # 1C counts as 1 and 2C as 2: present means the condition holds
                if kind not in "12":
                    continue
                try:
                    vr = dictionary_VR(tag)
                except KeyError:
                    continue
                if tag not in compound and (tag in listed or vr not in IDENTITY_VRS):
                    continue
                where = nested if attribute["path"] else top
                key = f"{tag:08x}"
                where[key] = strictest(where.get(key), kind)
        out_iods[iod] = {"top": dict(sorted(top.items())), "nested": dict(sorted(nested.items()))}

    document = {
        "source": f"DICOM PS3.3 module and IOD tables as shipped in highdicom {version('highdicom')}",
        "sop_classes": dict(sorted(sop_classes.items())),
        "iods": dict(sorted(out_iods.items())),
    }
    target = DATA / "attribute_types.json"
    target.write_text(json.dumps(document, separators=(",", ":"), sort_keys=False) + "\n")
    print(f"wrote {target} ({target.stat().st_size} bytes, {len(out_iods)} IODs)")


if __name__ == "__main__":
    main()
