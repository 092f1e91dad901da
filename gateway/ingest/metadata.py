"""An instance's WADO-RS metadata (DICOM JSON, PS3.18 F.2), made once at ingest and kept in the index.

Large binary values (pixel data, overlays, waveforms...) are not copied: they
become ``BulkDataURI`` entries holding just their tag, which the metadata
endpoint turns into the instance's bulkdata URL. The deferred pixel data of
a received instance is never read for this.
"""

from __future__ import annotations

import json
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

BULK_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
BULK_THRESHOLD = 1024


def _is_bulk(raw: Any, vr: str) -> bool:
    if vr not in BULK_VRS:
        return False
    length = raw.length if isinstance(raw, RawDataElement) else len(raw.value or b"")
    return length > BULK_THRESHOLD or length == 0xFFFFFFFF


def _dictionary_vr(tag: int) -> str:
    try:
        return dictionary_VR(tag).split(" or ")[0]
    except KeyError:
        return "UN"


def metadata_dict(ds: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag in ds.keys():
        raw = ds.get_item(tag, keep_deferred=True)
        vr = raw.VR or _dictionary_vr(int(tag))
        key = f"{int(tag):08X}"
        if _is_bulk(raw, str(vr)):
            out[key] = {"vr": str(vr), "BulkDataURI": key}
            continue
        element = ds[tag] if isinstance(raw, RawDataElement) else raw  # ds[tag] only to convert
        if element.VR == "SQ":
            out[key] = {"vr": "SQ", "Value": [metadata_dict(item) for item in element.value]}
        else:
            out[key] = element.to_json_dict(None, BULK_THRESHOLD)
    return out


def instance_metadata(ds: Dataset) -> str:
    return json.dumps(metadata_dict(ds), ensure_ascii=False, separators=(",", ":"))
