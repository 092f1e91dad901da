"""File Meta Information (PS3.10 section 7.1) for a received dataset, packed directly.

Received datasets become DICOM Part 10 files. pydicom's writer takes about
half a millisecond per file for these six elements; packing them takes
microseconds. The tests read the result back with pydicom.
"""

from __future__ import annotations

import struct

# The gateway's implementation identity, in every file it writes and every association it negotiates.
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1337.1"
IMPLEMENTATION_VERSION = "PACSGW_010"

_PREAMBLE = bytes(128) + b"DICM"


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str) -> bytes:
    """Preamble, ``DICM`` and the File Meta group in Explicit VR Little Endian."""
    body = b"".join(
        (
            struct.pack("<HH2s2sI", 0x0002, 0x0001, b"OB", b"\x00\x00", 2) + b"\x00\x01",
            _element(0x0002, b"UI", sop_class_uid.encode("ascii")),
            _element(0x0003, b"UI", sop_instance_uid.encode("ascii")),
            _element(0x0010, b"UI", transfer_syntax_uid.encode("ascii")),
            _element(0x0012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii")),
            _element(0x0013, b"SH", IMPLEMENTATION_VERSION.encode("ascii")),
            *((_element(0x0016, b"AE", source_ae.encode("ascii", "replace")),) if source_ae else ()),
        )
    )
    return _PREAMBLE + struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body
