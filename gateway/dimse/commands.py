"""DIMSE command sets (PS3.7 section 9 and annex E): always Implicit VR Little Endian."""

from __future__ import annotations

import io
from enum import IntEnum
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

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


def _encode(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    return fp.getvalue()


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


def n_response(request: Dataset, status: int, *, sop_class: str, sop_instance: str, error_comment: str | None = None) -> bytes:
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
