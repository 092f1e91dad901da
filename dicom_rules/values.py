"""Reading attribute values as text, the way the index and the vault keep them."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue


def text_value(ds: Dataset, keyword: str) -> str:
    """The value as text: multiple values joined with a backslash, surrounding spaces removed, "" when absent."""
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value).strip()
