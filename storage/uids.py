"""The DICOM UID grammar (PS3.5 section 9.1), checked before a UID is used anywhere."""

from __future__ import annotations

import re

# Components are digits without leading zeros (a lone "0" is allowed),
# separated by single dots; at most 64 characters in all.
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


class InvalidUID(ValueError):
    """A value that does not follow the DICOM UID grammar."""


def is_valid_uid(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and _UID.fullmatch(value) is not None


def validate_uid(value: object, what: str = "UID") -> str:
    """Return the UID unchanged, or raise InvalidUID naming what it was meant to be."""
    if not is_valid_uid(value):
        raise InvalidUID(f"{what} is not a valid DICOM UID")
    return value  # type: ignore[return-value]
