"""One timer per association: what times out is the peer's silence while a PDU is awaited, nothing else."""

from __future__ import annotations

import asyncio
import struct

import pytest

from gateway.dimse import pdu

IDLE = 0.3


def _p_data(body: bytes) -> bytes:
    return struct.pack(">BxI", pdu.P_DATA_TF, len(body)) + body


async def _trickle(stream: asyncio.StreamReader, data: bytes, pieces: int, gap: float) -> None:
    step = -(-len(data) // pieces)
    for start in range(0, len(data), step):
        stream.feed_data(data[start : start + step])
        await asyncio.sleep(gap)


def test_pdus_read_whole_and_in_pieces() -> None:
    async def main() -> list[tuple[int, bytes]]:
        stream = asyncio.StreamReader()
        reader = pdu.PDUReader(stream, 1 << 16, IDLE)
        body = struct.pack(">IBB", 9, 1, 3) + b"command"
        stream.feed_data(_p_data(body) + pdu.release_rp()[:3])
        got = [await reader.read()]
        feeding = asyncio.create_task(_trickle(stream, pdu.release_rp()[3:], 3, 0.01))
        got.append(await reader.read())
        await feeding
        reader.close()
        return got

    first, second = asyncio.run(main())
    assert first[0] == pdu.P_DATA_TF and list(pdu.iter_pdvs(first[1], 0))[0][2] == b"command"
    assert second == (pdu.A_RELEASE_RP, bytes(4))


def test_silence_before_a_pdu_times_out_unless_busy() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        stream = asyncio.StreamReader()
        busy_until = loop.time() + 3 * IDLE
        reader = pdu.PDUReader(stream, 1 << 16, IDLE, busy=lambda: loop.time() < busy_until)
        started = loop.time()
        with pytest.raises(TimeoutError):
            await reader.read()
        busy_wait = loop.time() - started
        idle_reader = pdu.PDUReader(stream, 1 << 16, IDLE)
        started = loop.time()
        with pytest.raises(TimeoutError):
            await idle_reader.read()
        return busy_wait, loop.time() - started

    busy_wait, idle_wait = asyncio.run(main())
    assert busy_wait >= 3 * IDLE
    assert IDLE <= idle_wait < 3 * IDLE


def test_a_pdu_slower_than_the_timeout_succeeds_and_silence_mid_pdu_does_not() -> None:
    async def main() -> None:
        stream = asyncio.StreamReader()
        reader = pdu.PDUReader(stream, 1 << 16, IDLE, busy=lambda: True)  # busy counts before a PDU only
        data = _p_data(struct.pack(">IBB", 402, 1, 2) + bytes(400))
        feeding = asyncio.create_task(_trickle(stream, data, 8, IDLE / 3))  # 8 pieces: longer than 2 IDLE in all
        pdu_type, body = await reader.read()
        await feeding
        assert pdu_type == pdu.P_DATA_TF and len(body) == 406
        stream.feed_data(data[:100])
        with pytest.raises(TimeoutError):
            await reader.read()

    asyncio.run(main())


def test_time_between_reads_is_not_counted_and_other_cancellations_pass() -> None:
    async def main() -> None:
        stream = asyncio.StreamReader()
        reader = pdu.PDUReader(stream, 1 << 16, IDLE)
        stream.feed_data(pdu.release_rp())
        await reader.read()
        await asyncio.sleep(IDLE * 2)  # storing, say: the armed timer must not count this
        loop = asyncio.get_running_loop()
        loop.call_later(IDLE / 2, stream.feed_data, pdu.release_rp())
        assert (await reader.read())[0] == pdu.A_RELEASE_RP
        task = asyncio.create_task(reader.read())
        await asyncio.sleep(IDLE / 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        reader.close()

    asyncio.run(main())


def test_a_closed_stream_is_an_incomplete_read_and_bad_headers_are_refused_unread() -> None:
    async def main() -> None:
        stream = asyncio.StreamReader()
        reader = pdu.PDUReader(stream, 1000, IDLE)
        stream.feed_data(struct.pack(">BxI", 0x09, 4))
        with pytest.raises(pdu.PDUError):
            await reader.read()
        stream.feed_data(struct.pack(">BxI", pdu.P_DATA_TF, 2000))
        with pytest.raises(pdu.PDUError):
            await reader.read()
        stream.feed_data(_p_data(b"abc")[:7])
        stream.feed_eof()
        with pytest.raises(asyncio.IncompleteReadError):
            await reader.read()
        reader.close()

    asyncio.run(main())
