"""CPU of the DIMSE receive path per 0.5 MiB C-STORE, in one process, no network.

What the association does per instance apart from storing it: read the PDUs
(a 16 KiB maximum, as DCMTK's storescu offers), reassemble the fragments,
decode the C-STORE-RQ command and encode its response. A task feeds the
bytes to an ``asyncio.StreamReader`` as a socket would (its CPU is counted
too). Runs with the PDU reader of older releases as well (``read_pdu`` with
an idle timeout and pydicom's command reader), so that a release can be
compared with the one before in the same session::

    .venv/bin/python -m bench.dimse_cpu --count 200 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import warnings

from gateway.dimse import commands as c
from gateway.dimse import pdu

NEW = hasattr(pdu, "PDUReader")

_COMMAND = c.store_request(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.8.498.1234567890123456789")
_INSTANCE = pdu.p_data(1, _COMMAND, command=True, max_pdu=16384) + pdu.p_data(
    1, bytes(512 * 1024 + 2000), command=False, max_pdu=16384
)


def _pydicom_command(data: bytearray) -> object:
    with warnings.catch_warnings():  # as the association reads a command pydicom's way
        warnings.simplefilter("ignore")
        command = c.decode_command(bytes(data))
        for _ in command:
            pass
    return command


async def _feed(stream: asyncio.StreamReader, count: int) -> None:
    """The instances in 64 KiB pieces, as a socket's reads give them, never more than the transport buffers."""
    for _ in range(count):
        for start in range(0, len(_INSTANCE), 65536):
            while len(stream._buffer) > 131072:  # type: ignore[attr-defined]  # the transport pauses reading here
                await asyncio.sleep(0)
            stream.feed_data(_INSTANCE[start : start + 65536])
        await asyncio.sleep(0)


async def _run(count: int) -> float:
    """CPU seconds to receive and answer ``count`` instances."""
    stream = asyncio.StreamReader(limit=65536)
    feeder = asyncio.create_task(_feed(stream, count))
    reader = pdu.PDUReader(stream, 1 << 20, 30.0, lambda: False) if NEW else None
    started = time.process_time()
    sizes = 0
    for _ in range(count):
        command_bytes, fragments, dataset = bytearray(), [], bytearray(300)  # 300: the File Meta group's place
        command: object = None
        data = None
        while data is None:
            if reader is not None:
                pdvs = pdu.iter_pdvs((await reader.read())[1], 0)
            else:
                pdvs = pdu.iter_pdvs((await pdu.read_pdu(stream, 1 << 20, idle=30.0, busy=lambda: False))[1])
            for _context, control, fragment in pdvs:
                if control & pdu.COMMAND:
                    command_bytes += fragment
                    if control & pdu.LAST_FRAGMENT:
                        command = (c.decode_store_command(command_bytes) if NEW else None) or _pydicom_command(command_bytes)
                    continue
                if NEW:
                    fragments.append(fragment)
                else:
                    dataset += fragment
                if control & pdu.LAST_FRAGMENT:
                    data = b"".join([dataset, *fragments]) if NEW else dataset
        sizes += len(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pdu.p_data(1, c.response(command, 0), command=True, max_pdu=16384)  # type: ignore[arg-type]
    cpu = time.process_time() - started
    await feeder
    assert sizes == count * (300 + 512 * 1024 + 2000)
    return cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="instances per repeat (default 200)")
    parser.add_argument("--repeat", type=int, default=5, help="repeats; the median is reported (default 5)")
    args = parser.parse_args(argv)
    runs = [1000 * asyncio.run(_run(args.count)) / args.count for _ in range(args.repeat)]
    label = "hand-read commands, one timer" if NEW else "pydicom commands, asyncio.timeout per read"
    print(f"{label}: {statistics.median(runs):.3f} ms CPU per instance, median of "
          + ", ".join(f"{r:.3f}" for r in runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
