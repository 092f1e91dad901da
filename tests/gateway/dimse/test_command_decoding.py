"""C-STORE-RQ command sets are read by hand for speed: the same elements and values as pydicom's reader, and
anything unusual left to pydicom."""

from __future__ import annotations

import itertools
import struct
import warnings

import pytest
from pydicom.dataset import Dataset

from gateway.dimse.commands import (
    CommandField,
    StoreCommand,
    _pydicom_encode,
    decode_command,
    decode_store_command,
    response,
)
from gateway.dimse.status import StoreStatus

CT = "1.2.840.10008.5.1.4.1.1.2"


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0, element, len(value)) + value


def _command(*elements: tuple[int, bytes], group_length: bool = True) -> bytes:
    body = b"".join(_element(element, value) for element, value in elements)
    return (_element(0x0000, struct.pack("<I", len(body))) if group_length else b"") + body


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def _store(
    *,
    sop_class: bytes = CT.encode() + b"\0",
    sop_instance: bytes = b"1.2.3.4.5\0",
    message_id: int = 7,
    priority: int | None = 0,
    data_set_type: int = 0x0000,
    field: int = CommandField.C_STORE_RQ,
    move: tuple[bytes, int] | None = None,
    extra: tuple[tuple[int, bytes], ...] = (),
    group_length: bool = True,
) -> bytes:
    elements = [(0x0002, sop_class), (0x0100, _us(field)), (0x0110, _us(message_id))]
    if priority is not None:
        elements.append((0x0700, _us(priority)))
    elements.append((0x0800, _us(data_set_type)))
    elements.append((0x1000, sop_instance))
    if move is not None:
        elements += [(0x1030, move[0]), (0x1031, _us(move[1]))]
    elements += extra
    elements.sort()
    return _command(*elements, group_length=group_length)


def _pydicom(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        command = decode_command(data)
        for _ in command:
            pass
    return command


def _values(command: Dataset) -> dict[int, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {int(tag): command[tag].value for tag in command.keys()}


# Commands the hand reader takes: every one must read as pydicom reads it.
PLAIN = {
    "storescu": _store(),
    "even uids": _store(sop_instance=b"1.2.3.45", sop_class=b"1.2.840.10008.5.1.4.1.1.4"),
    "space padded uid": _store(sop_instance=b"1.2.3.4.5 "),
    "no group length": _store(group_length=False),
    "no priority": _store(priority=None),
    "high priority": _store(priority=1),
    "largest message id": _store(message_id=0xFFFF),
    "message id 0": _store(message_id=0),
    "no dataset flag value": _store(data_set_type=0x0001),
    "move originator": _store(move=(b"MOVESCU ", 42)),
    "move originator padded both sides": _store(move=(b"  MOVE SCU  ", 3)),
    "empty move originator": _store(move=(b"", 0)),
    "64 character uid": _store(sop_instance=b"1." + b"2" * 62),
    "uid with trailing null and space": _store(sop_instance=b"1.2.3\0 "),
}

# Commands it leaves to pydicom (None), whatever pydicom makes of them.
UNUSUAL = {
    "other command": _store(field=CommandField.C_FIND_RQ),
    "unknown element": _store(extra=((0x0900, _us(0)),)),
    "element of another group": _store() + struct.pack("<HHI", 0x0008, 0x0018, 2) + b"1\0",
    "multi-valued uid": _store(sop_instance=b"1.2.3\\1.2.4"),
    "uid with letters": _store(sop_instance=b"1.2.abc\0"),
    "empty uid": _store(sop_instance=b""),
    "uid of nulls": _store(sop_instance=b"\0\0"),
    "uid longer than 64": _store(sop_instance=b"1." + b"2" * 64),
    "non-ascii uid": _store(sop_instance="1.2.é".encode("latin-1") + b"\0"),
    "multi-valued ae": _store(move=(b"A\\B ", 1)),
    "non-ascii ae": _store(move=("ÄE".encode("latin-1"), 1)),
    "ae longer than 16": _store(move=(b"A" * 18, 1)),
    "us of 4 bytes": _command((0x0002, CT.encode() + b"\0"), (0x0100, struct.pack("<HH", 1, 1)), (0x0110, _us(1)),
                              (0x0800, _us(0)), (0x1000, b"1.2\0")),  # fmt: skip
    "empty message id": _command((0x0002, CT.encode() + b"\0"), (0x0100, _us(1)), (0x0110, b""), (0x0800, _us(0)),
                                 (0x1000, b"1.2\0")),  # fmt: skip
    "no message id": _command((0x0002, CT.encode() + b"\0"), (0x0100, _us(1)), (0x0800, _us(0)), (0x1000, b"1.2\0")),
    "no sop instance": _command((0x0002, CT.encode() + b"\0"), (0x0100, _us(1)), (0x0110, _us(1)), (0x0800, _us(0))),
    "no sop class": _command((0x0100, _us(1)), (0x0110, _us(1)), (0x0800, _us(0)), (0x1000, b"1.2\0")),
    "elements out of order": _element(0x0100, _us(1)) + _element(0x0002, CT.encode() + b"\0")
    + _element(0x0110, _us(1)) + _element(0x0800, _us(0)) + _element(0x1000, b"1.2\0"),
    "element twice": _store() + _element(0x1000, b"1.2\0"),
    "group length of 2 bytes": _element(0x0000, _us(10)) + _store(group_length=False),
    "empty": b"",
}

BROKEN = {
    "truncated value": _store()[:-3],
    "truncated header": _store() + b"\0\0\0",
    "length past the end": _store() + struct.pack("<HHI", 0, 0x1030, 100) + b"AE",
}


@pytest.mark.parametrize("name", PLAIN)
def test_plain_store_commands_read_as_pydicom_reads_them(name: str) -> None:
    data = PLAIN[name]
    fast = decode_store_command(data)
    assert isinstance(fast, StoreCommand)
    slow = _pydicom(data)
    assert list(fast.keys()) == list(slow.keys())
    assert _values(fast) == _values(slow)
    assert fast.message_id == slow.MessageID
    assert fast.data_set_type == slow.CommandDataSetType
    assert fast.sop_class == slow.AffectedSOPClassUID
    assert fast.sop_instance == slow.AffectedSOPInstanceUID
    assert fast.get("AffectedSOPInstanceUID") == slow.get("AffectedSOPInstanceUID")
    assert ("MoveOriginatorApplicationEntityTitle" in fast) == ("MoveOriginatorApplicationEntityTitle" in slow)


@pytest.mark.parametrize("name", UNUSUAL)
def test_unusual_commands_are_left_to_pydicom(name: str) -> None:
    assert decode_store_command(UNUSUAL[name]) is None


@pytest.mark.parametrize("name", BROKEN)
def test_broken_commands_are_left_to_pydicom(name: str) -> None:
    assert decode_store_command(BROKEN[name]) is None


def test_many_generated_commands_read_as_pydicom_reads_them() -> None:
    uids = [b"1.2\0", b"1.2.3", b"1.2.840.10008.5.1.4.1.1.2\0", b"2.25.1234567890123456789 ", b"1." + b"9" * 62, b"1.2.\0"]
    moves = [None, (b"SCU", 1), (b"SCU ", 0xFFFF), (b" X ", 2)]
    fast_count = 0
    for sop_class, sop_instance, message_id, priority, move in itertools.product(
        uids, uids, (0, 1, 0x7FFF, 0xFFFF), (None, 0, 2), moves
    ):
        data = _store(sop_class=sop_class, sop_instance=sop_instance, message_id=message_id, priority=priority, move=move)
        fast = decode_store_command(data)
        assert fast is not None
        fast_count += 1
        slow = _pydicom(data)
        assert _values(fast) == _values(slow)
        for status, comment in ((0x0000, None), (0xA700, "gateway spool full"), (0xC000, "odd")):
            assert response(fast, status, error_comment=comment) == response(slow, status, error_comment=comment)
    assert fast_count == len(uids) ** 2 * 4 * 3 * len(moves)


@pytest.mark.parametrize("name", PLAIN)
@pytest.mark.parametrize(
    ("status", "comment"),
    [
        (StoreStatus.SUCCESS, None),
        (0x0000, ""),
        (StoreStatus.OUT_OF_RESOURCES, "gateway spool full: 3 GiB"),
        (0xC000, "x" * 80),  # cut to 64
        (0xC000, "non-ascii é"),  # pydicom encodes it
        (0xB000, "a\\b"),
    ],
)
def test_store_responses_are_what_pydicom_writes(name: str, status: int, comment: str | None) -> None:
    fast = decode_store_command(PLAIN[name])
    assert fast is not None
    slow = _pydicom(PLAIN[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        packed = response(fast, status, error_comment=comment)
        assert packed == response(slow, status, error_comment=comment)
        rsp = Dataset()
        rsp.AffectedSOPClassUID = slow.AffectedSOPClassUID
        rsp.CommandField = 0x8001
        rsp.MessageIDBeingRespondedTo = slow.MessageID
        rsp.CommandDataSetType = 0x0101
        rsp.Status = int(status)
        rsp.AffectedSOPInstanceUID = slow.AffectedSOPInstanceUID
        if comment:
            rsp.ErrorComment = comment[:64]
        body = _pydicom_encode(rsp)
        assert packed == struct.pack("<HHII", 0, 0, 4, len(body)) + body


def test_other_responses_to_a_hand_read_command_go_through_pydicom() -> None:
    fast = decode_store_command(PLAIN["storescu"])
    slow = _pydicom(PLAIN["storescu"])
    assert fast is not None
    for kwargs in ({"offending_element": 0x00080018, "error_comment": "mismatch"}, {"with_dataset": True}):
        assert response(fast, 0xA900, **kwargs) == response(slow, 0xA900, **kwargs)  # type: ignore[arg-type]
