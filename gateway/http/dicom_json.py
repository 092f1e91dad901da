"""DICOM JSON (PS3.18 Annex F) for the attributes the index returns."""

from __future__ import annotations

from typing import Any


def element(vr: str, value: Any) -> dict[str, Any]:
    """One attribute; an empty value gives the attribute with no Value, as PS3.18 F.2.5 asks."""
    if value is None or value == "" or value == []:
        return {"vr": vr}
    if vr == "PN":
        groups = str(value).split("=")
        name = {key: group for key, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups) if group}
        return {"vr": vr, "Value": [name]} if name else {"vr": vr}
    if vr in {"IS", "US", "UL", "SL", "SS"}:
        return {"vr": vr, "Value": [int(value)]}
    if isinstance(value, list):
        return {"vr": vr, "Value": value}
    return {"vr": vr, "Value": [value]}
