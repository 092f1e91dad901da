"""DICOM Upper Layer PDU framing (PS3.8 section 9.3): reading PDUs, writing the small fixed ones and P-DATA."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterator
from typing import Any

A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

_PDU_HEADER = struct.Struct(">BxI")
_PDV_HEADER = struct.Struct(">IBB")  # item length, presentation context ID, message control header

# Message control header bits (PS3.8 Annex E.2).
COMMAND = 0x01
LAST_FRAGMENT = 0x02

# A-ABORT sources and A-P-ABORT reasons (PS3.8 section 9.3.8).
ABORT_BY_USER = 0x00
ABORT_BY_PROVIDER = 0x02
REASON_NOT_SPECIFIED = 0x00
REASON_UNRECOGNISED_PDU = 0x01
REASON_UNEXPECTED_PDU = 0x02
REASON_INVALID_PARAMETER = 0x06


class PDUError(Exception):
    """The peer sent something that is not a well-formed PDU; carries the A-P-ABORT reason."""

    def __init__(self, message: str, reason: int = REASON_INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


async def read_pdu(
    reader: asyncio.StreamReader, max_length: int, *, expect: int | None = None, idle: float | None = None,
    busy: Callable[[], bool] | None = None,
) -> tuple[int, bytes | bytearray]:
    """The next PDU as (type, whole PDU bytes). Raises IncompleteReadError when the peer closes.

    The header is checked before the body is read: a PDU of an unknown or
    unexpected type, or longer than ``max_length``, is never buffered.
    ``idle``: seconds the peer may stay silent (TimeoutError), however long
    the whole PDU takes to arrive; before a PDU begins, silence is no fault
    while ``busy()`` holds (the peer waits for what we are sending it).
    """
    while True:
        try:
            async with asyncio.timeout(idle):
                first = await reader.readexactly(1)
            break
        except TimeoutError:
            if busy is None or not busy():
                raise
    async with asyncio.timeout(idle):
        header = first + await reader.readexactly(_PDU_HEADER.size - 1)
    pdu_type, length = _PDU_HEADER.unpack(header)
    if pdu_type not in range(A_ASSOCIATE_RQ, A_ABORT + 1):
        raise PDUError(f"unknown PDU type 0x{pdu_type:02x}", REASON_UNRECOGNISED_PDU)
    if expect is not None and pdu_type != expect:
        raise PDUError(f"PDU type 0x{pdu_type:02x} where 0x{expect:02x} was expected", REASON_UNEXPECTED_PDU)
    limit = max_length + 6
    if pdu_type != P_DATA_TF:
        limit = 1 << 20  # association and release PDUs are small
    if length > limit:
        raise PDUError(f"PDU of {length} bytes exceeds the negotiated maximum")
    if idle is None:
        return pdu_type, header + await reader.readexactly(length)
    whole = bytearray(header)
    end = len(header) + length
    while len(whole) < end:
        async with asyncio.timeout(idle):  # restarted by every piece: what times out is silence
            piece = await reader.read(end - len(whole))
        if not piece:
            raise asyncio.IncompleteReadError(bytes(whole), end)
        whole += piece
    return pdu_type, whole


_BETWEEN, _STARTING, _WITHIN = 0, 1, 2  # where a PDUReader is: not reading, waiting for a PDU, inside one


class PDUReader:
    """Reads the PDUs of one association after its negotiation, with one timer for all of its reads.

    What times out is silence: ``idle`` seconds without a byte from the peer
    while a PDU is awaited or arriving (TimeoutError), however long the PDU
    takes; before a PDU begins, silence is no fault while ``busy()`` holds.
    Time spent elsewhere (storing, sending) is never counted. Instead of an
    ``asyncio.timeout`` per read (a timer handle made and cancelled each time,
    several per PDU), each piece read notes the time, and one timer, armed
    when a read begins and none is pending, checks that note when it fires
    and re-arms itself for the rest of the interval or cancels the reading
    task, as ``asyncio.timeout`` does.
    """

    def __init__(
        self, reader: asyncio.StreamReader, max_length: int, idle: float, busy: Callable[[], bool] | None = None
    ) -> None:
        self._reader = reader
        self._max_length = max_length
        self._idle = idle
        self._busy = busy
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._state = _BETWEEN
        self._since = 0.0  # when the peer last sent something, or the current read began
        self._expired = False

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        if self._state == _BETWEEN:
            return  # the next read arms it again
        now = self._loop.time()
        due = self._since + self._idle
        if now < due:
            self._handle = self._loop.call_at(due, self._check)
        elif self._state == _STARTING and self._busy is not None and self._busy():
            self._since = now
            self._handle = self._loop.call_at(now + self._idle, self._check)
        elif self._task is not None:
            self._expired = True
            self._task.cancel()

    async def read(self) -> tuple[int, bytes]:
        """The next PDU as (type, its bytes after the 6-byte header); IncompleteReadError when the peer closes.

        The header is checked before the body is read: a PDU of an unknown
        type, or longer than ``max_length``, is never buffered.
        """
        reader = self._reader
        self._task = asyncio.current_task()
        self._since = self._loop.time()
        self._state = _STARTING
        if self._handle is None:
            self._handle = self._loop.call_at(self._since + self._idle, self._check)
        try:
            header = await reader.read(_PDU_HEADER.size)
            self._state = _WITHIN
            if len(header) < _PDU_HEADER.size:
                header += await self._exactly(_PDU_HEADER.size - len(header), header)
            pdu_type, length = _PDU_HEADER.unpack(header)
            if pdu_type not in range(A_ASSOCIATE_RQ, A_ABORT + 1):
                raise PDUError(f"unknown PDU type 0x{pdu_type:02x}", REASON_UNRECOGNISED_PDU)
            if length > (self._max_length + 6 if pdu_type == P_DATA_TF else 1 << 20):
                raise PDUError(f"PDU of {length} bytes exceeds the negotiated maximum")
            return pdu_type, await self._exactly(length, header)
        except asyncio.CancelledError:
            if self._expired:
                self._expired = False
                task = self._task
                if task is not None and task.uncancel() == 0:
                    raise TimeoutError from None
            raise
        finally:
            self._state = _BETWEEN

    async def _exactly(self, length: int, before: bytes) -> bytes:
        """``length`` bytes, joined once from the pieces the stream gives (usually one)."""
        if not length:
            return b""
        self._since = self._loop.time()
        piece = await self._reader.read(length)
        if len(piece) == length:
            return piece
        pieces = [piece]
        got = len(piece)
        while piece and got < length:
            self._since = self._loop.time()
            piece = await self._reader.read(length - got)
            pieces.append(piece)
            got += len(piece)
        if got < length:
            raise asyncio.IncompleteReadError(before + b"".join(pieces), len(before) + length)
        return b"".join(pieces)


def iter_pdvs(pdu: bytes | bytearray, start: int = _PDU_HEADER.size) -> Iterator[tuple[int, int, memoryview]]:
    """Presentation data values of a P-DATA-TF PDU (its bytes from ``start``, after the header by default):
    (context ID, control header, fragment)."""
    view = memoryview(pdu)
    offset, end = start, len(pdu)
    if offset == end:
        raise PDUError("P-DATA-TF without presentation data values")
    while offset < end:
        if end - offset < _PDV_HEADER.size:
            raise PDUError("truncated presentation data value")
        item_length, context_id, control = _PDV_HEADER.unpack_from(pdu, offset)
        if item_length < 2 or offset + 4 + item_length > end:
            raise PDUError("presentation data value length out of bounds")
        yield context_id, control, view[offset + 6 : offset + 4 + item_length]
        offset += 4 + item_length


def p_data(context_id: int, payload: bytes, *, command: bool, max_pdu: int) -> bytes:
    """One message as P-DATA-TF PDUs, fragmented to the peer's maximum PDU length (0 = no limit)."""
    room = (max_pdu - 6 - 6) if max_pdu else len(payload) or 1
    room = max(room, 1)
    pdus = []
    for start in range(0, max(len(payload), 1), room):
        fragment = payload[start : start + room]
        control = (COMMAND if command else 0) | (LAST_FRAGMENT if start + room >= len(payload) else 0)
        item = _PDV_HEADER.pack(len(fragment) + 2, context_id, control) + fragment
        pdus.append(_PDU_HEADER.pack(P_DATA_TF, len(item)) + item)
    return b"".join(pdus)


def associate_rj(result: int, source: int, reason: int) -> bytes:
    return _PDU_HEADER.pack(A_ASSOCIATE_RJ, 4) + bytes((0, result, source, reason))


def release_rp() -> bytes:
    return _PDU_HEADER.pack(A_RELEASE_RP, 4) + bytes(4)


def abort(source: int = ABORT_BY_PROVIDER, reason: int = REASON_NOT_SPECIFIED) -> bytes:
    return _PDU_HEADER.pack(A_ABORT, 4) + bytes((0, 0, source, reason))
