"""The EMR's MLLP listener for results (ORU^R01): a real MLLP server in a thread of the test process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def mllp_listener() -> Iterator[tuple[int, list[Any]]]:
    """The EMR's MLLP listener for results, in its own thread: keeps what it receives, acknowledges with AA."""
    import asyncio

    import hl7
    from hl7.mllp import start_hl7_server

    from tests.peers.ports import free_port

    received: list[hl7.Message] = []
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def serve(reader: Any, writer: Any) -> None:
        try:
            while True:
                message = await reader.readmessage()
                received.append(message)
                control = str(message.segment("MSH")(10))
                writer.writeblock(f"MSH|^~\\&|EMR|BV|PACSGW|RAD|20261129||ACK|A{control}|P|2.5\rMSA|AA|{control}".encode())
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await start_hl7_server(serve, "127.0.0.1", port, encoding="utf-8")
        ready.set()
        async with server:
            try:
                await server.serve_forever()
            except asyncio.CancelledError:
                pass

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield port, received
    finally:
        loop.call_soon_threadsafe(lambda: [task.cancel() for task in asyncio.all_tasks(loop)])
        thread.join(5)
