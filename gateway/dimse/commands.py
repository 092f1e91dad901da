"""DIMSE command sets (PS3.7 section 9 and annex E): always Implicit VR Little Endian."""

from __future__ import annotations

import io
import struct
from enum import IntEnum
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.multival import MultiValue

NO_DATASET = 0x0101


class CommandField(IntEnum):
    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_GET_RQ = 0x0010
    C_GET_RSP = 0x8010
    C_MOVE_RQ = 0x0021
    C_MOVE_RSP = 0x8021
    C_FIND_RQ = 0x0020
    C_FIND_RSP = 0x8020
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    C_CANCEL_RQ = 0x0FFF
    N_SET_RQ = 0x0120
    N_SET_RSP = 0x8120
    N_CREATE_RQ = 0x0140
    N_CREATE_RSP = 0x8140


DATASET_PRESENT = 0x0000  # any value other than NO_DATASET


def decode_command(data: bytes) -> Dataset:
    return read_dataset(io.BytesIO(data), is_implicit_VR=True, is_little_endian=True)


def _pydicom_encode(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    return fp.getvalue()


_NUMBERS = {"US": "H", "UL": "I", "SS": "h", "SL": "i"}
_TEXT = frozenset({"UI", "AE", "LO", "SH", "CS", "ST", "LT"})


def _value_bytes(vr: str, value: Any) -> bytes | None:
    """One value of a command element as pydicom writes it, for the VRs command sets use (None: any other)."""
    if value is None or value == "":
        return b""
    if vr in _NUMBERS:
        values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
        if not all(type(v) is int for v in values):
            return None
        return struct.pack(f"<{len(values)}{_NUMBERS[vr]}", *values)
    if vr == "AT":
        tags = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
        if not all(isinstance(t, int) for t in tags):
            return None
        return b"".join(struct.pack("<HH", int(t) >> 16, int(t) & 0xFFFF) for t in tags)
    if vr in _TEXT and isinstance(value, str) and value.isascii() and "\\" not in value:
        text = value.encode("ascii")
        return text + (b"\0" if vr == "UI" else b" ") if len(text) % 2 else text
    return None


def _encode(ds: Dataset) -> bytes:
    """Implicit VR Little Endian, written here for the few VRs of command sets (byte for byte what pydicom
    writes: tested); anything else goes through pydicom. A response is encoded for every C-STORE."""
    parts: list[bytes] = []
    for tag in sorted(ds.keys()):
        element = ds[tag]
        try:
            value = _value_bytes(element.VR, element.value)
        except struct.error:  # out of range for its VR: pydicom's own error, as before
            value = None
        if value is None:
            return _pydicom_encode(ds)
        parts.append(struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)))
        parts.append(value)
    return b"".join(parts)


def encode_command(ds: Dataset) -> bytes:
    body = _encode(ds)
    group = Dataset()
    group.CommandGroupLength = len(body)
    return _encode(group) + body


def response(
    request: Dataset,
    status: int,
    *,
    error_comment: str | None = None,
    offending_element: int | None = None,
    with_dataset: bool = False,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """The response to ``request``: same SOP Class (and Instance); a dataset follows when ``with_dataset``."""
    rsp = Dataset()
    rsp.AffectedSOPClassUID = request.get("AffectedSOPClassUID", "")
    rsp.CommandField = int(request.CommandField) | 0x8000
    rsp.MessageIDBeingRespondedTo = request.MessageID
    rsp.CommandDataSetType = DATASET_PRESENT if with_dataset else NO_DATASET
    rsp.Status = status
    if "AffectedSOPInstanceUID" in request:
        rsp.AffectedSOPInstanceUID = request.AffectedSOPInstanceUID
    if offending_element is not None:
        rsp.OffendingElement = [offending_element]
    if error_comment:
        rsp.ErrorComment = error_comment[:64]
    for keyword, value in (extra or {}).items():
        setattr(rsp, keyword, value)
    return encode_command(rsp)


def n_response(
    request: Dataset, status: int, *, sop_class: str, sop_instance: str, error_comment: str | None = None,
    error_id: int | None = None,
) -> bytes:
    """The response to an N-CREATE or N-SET request (PS3.7 10.3): no attribute list returned."""
    rsp = Dataset()
    rsp.AffectedSOPClassUID = sop_class
    rsp.CommandField = int(request.CommandField) | 0x8000
    rsp.MessageIDBeingRespondedTo = request.MessageID
    rsp.CommandDataSetType = NO_DATASET
    rsp.Status = status
    if sop_instance:
        rsp.AffectedSOPInstanceUID = sop_instance
    if error_comment:
        rsp.ErrorComment = error_comment[:64]
    if error_id is not None:
        rsp.ErrorID = error_id
    return encode_command(rsp)


def store_request(message_id: int, sop_class: str, sop_instance: str, *, move_originator: str = "") -> bytes:
    """A C-STORE request with a dataset to follow (a C-GET sub-operation)."""
    rq = Dataset()
    rq.AffectedSOPClassUID = sop_class
    rq.CommandField = CommandField.C_STORE_RQ
    rq.MessageID = message_id
    rq.Priority = 0
    rq.CommandDataSetType = DATASET_PRESENT
    rq.AffectedSOPInstanceUID = sop_instance
    if move_originator:
        rq.MoveOriginatorApplicationEntityTitle = move_originator
    return encode_command(rq)
