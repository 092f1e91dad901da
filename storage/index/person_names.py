"""Person names folded for search: case, diacritics and Vietnamese đ ignored.

``Nguyễn^Văn An`` folds to ``nguyen van an``; component separators (``^``)
and component-group separators (``=``) become spaces.
"""

from __future__ import annotations

import unicodedata

_DIRECT = str.maketrans({"đ": "d", "Đ": "d", "^": " ", "=": " ", "ð": "d", "Ð": "d", "ø": "o", "Ø": "o", "ł": "l", "Ł": "l"})


def fold_name(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value.translate(_DIRECT))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


def fold_pattern(value: str) -> str:
    """Fold a search value but keep the DICOM wildcards ``*`` and ``?``."""
    return "".join(
        part if part in "*?" else fold_name(part) if part.strip() else " " for part in _split_wildcards(value)
    ).strip()


def _split_wildcards(value: str) -> list[str]:
    parts, current = [], ""
    for ch in value:
        if ch in "*?":
            if current:
                parts.append(current)
            parts.append(ch)
            current = ""
        else:
            current += ch
    if current:
        parts.append(current)
    return parts
