"""Status codes a store is answered with (PS3.4 Annex B.2.3 and PS3.7 Annex C).

DIMSE numbering, which STOW-RS reports too (as Failure Reason). Kept out of
``gateway.dimse`` so that the ingest service below the protocol adapters can
name them without depending on one of them.
"""

from __future__ import annotations

from enum import IntEnum


class StoreStatus(IntEnum):
    """The status of one C-STORE or STOW-RS instance."""

    SUCCESS = 0x0000
    # Refused: Out of Resources. The sender should retry later.
    OUT_OF_RESOURCES = 0xA700
    # Error: Data Set does not match SOP Class.
    DATASET_MISMATCH = 0xA900
    # Error: Cannot understand (0xC000-0xCFFF; the low byte is ours).
    CANNOT_UNDERSTAND = 0xC000
    MISSING_ATTRIBUTE = 0xC001
    INVALID_UID = 0xC002
    # Refused: SOP Class not supported.
    REFUSED_SOP_CLASS = 0x0122
    PROCESSING_FAILURE = 0x0110
    # Refused: Not Authorized (PS3.7 C.5.5): a rule of the gateway refuses the instance.
    NOT_AUTHORIZED = 0x0124
