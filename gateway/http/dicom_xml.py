"""The Native DICOM Model (PS3.19 Annex A, ``application/dicom+xml``) written from DICOM JSON (PS3.18 Annex F).

Metadata is kept as DICOM JSON; the XML form carries the same attributes:
``DicomAttribute`` with tag, VR and keyword, ``Value``, ``PersonName`` with
its component groups split into name components, ``Item`` for sequences,
``BulkData`` for values kept apart, and ``InlineBinary``.
"""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

from pydicom.datadict import keyword_for_tag

DICOM_XML = "application/dicom+xml"
_NAME_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _person_name(parent: ET.Element, number: int, value: Any) -> None:
    name = ET.SubElement(parent, "PersonName", number=str(number))
    groups = value if isinstance(value, dict) else {"Alphabetic": str(value)}
    for group in ("Alphabetic", "Ideographic", "Phonetic"):
        if groups.get(group):
            element = ET.SubElement(name, group)
            for component, text in zip(_NAME_COMPONENTS, str(groups[group]).split("^")):
                if text:
                    ET.SubElement(element, component).text = text


def _attributes(parent: ET.Element, dataset: dict[str, Any]) -> None:
    creators = {key.upper(): (e.get("Value") or [""])[0] for key, e in dataset.items() if _is_creator(key)}
    for key in sorted(dataset):
        element = dataset[key]
        tag = int(key, 16)
        vr = element.get("vr", "UN")
        attribute = ET.SubElement(parent, "DicomAttribute", {"tag": key.upper(), "vr": vr})
        keyword = keyword_for_tag(tag)
        if keyword:
            attribute.set("keyword", keyword)
        if (tag >> 16) % 2 and not _is_creator(key):
            creator = creators.get(f"{key[:4]}00{key[4:6]}".upper())  # (gggg,xxyy) is reserved by (gggg,00xx)
            if creator:
                attribute.set("privateCreator", str(creator))
        if "BulkDataURI" in element:
            ET.SubElement(attribute, "BulkData", uri=str(element["BulkDataURI"]))
        elif "InlineBinary" in element:
            ET.SubElement(attribute, "InlineBinary").text = str(element["InlineBinary"])
        for number, value in enumerate(element.get("Value", ()), start=1):
            if vr == "SQ":
                _attributes(ET.SubElement(attribute, "Item", number=str(number)), value or {})
            elif vr == "PN":
                _person_name(attribute, number, value)
            elif value is not None:
                ET.SubElement(attribute, "Value", number=str(number)).text = _text(value)


def _is_creator(key: str) -> bool:
    tag = int(key, 16)
    return bool((tag >> 16) % 2) and 0x10 <= (tag & 0xFFFF) <= 0xFF


def native_dicom_model(dataset: dict[str, Any]) -> bytes:
    """One dataset, given as DICOM JSON, as a Native DICOM Model document (UTF-8)."""
    root = ET.Element("NativeDicomModel", {"xmlns": "http://dicom.nema.org/PS3.19/models/NativeDICOM", "xml:space": "preserve"})
    _attributes(root, dataset)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)
