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


def study_attributes(row: dict[str, Any]) -> dict[str, Any]:
    """Study-level attributes of PS3.18 Table 6.7.1-2 from one index row."""
    modalities = [m for m in str(row.get("modalities") or "").split("\\") if m]
    out: dict[str, Any] = {
        "00080020": element("DA", row["study_date"]),
        "00080030": element("TM", row["study_time"]),
        "00080050": element("SH", row["accession_number"]),
        "00080056": element("CS", "ONLINE"),
        "00080061": element("CS", modalities),
        "00080090": element("PN", row["referring_physician_name"]),
        "00081030": element("LO", row["study_description"]),
        "00100010": element("PN", row["patient_name"]),
        "00100020": element("LO", row["patient_id"]),
        "00100021": element("LO", row["issuer_of_patient_id"]),
        "00100030": element("DA", row["patient_birth_date"]),
        "00100040": element("CS", row["patient_sex"]),
        "0020000D": element("UI", row["study_uid"]),
        "00200010": element("SH", row["study_id"]),
        "00201206": element("IS", row["num_series"]),
        "00201208": element("IS", row["num_instances"]),
    }
    return dict(sorted(out.items()))
