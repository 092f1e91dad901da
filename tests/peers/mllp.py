"""The EMR's MLLP listener for results (ORU^R01): a real MLLP server in a thread of the test process, in clear or
over TLS (python-hl7's asyncio server on a standard-library ``ssl`` context, as an EMR's own listener would be)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def tls_server_context(cert_file: Path, key_file: Path, *, client_ca_file: Path | None = None) -> ssl.SSLContext:
    """The EMR side's TLS: Python's defaults for a server, a client certificate required with ``client_ca_file``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file is not None:
        context.load_verify_locations(cafile=client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@contextmanager
def mllp_listener(tls: ssl.SSLContext | None = None) -> Iterator[tuple[int, list[Any]]]:
    """The EMR's MLLP listener for results, in its own thread: keeps what it receives, acknowledges with AA.
    ``tls``: MLLP over TLS with that server context (see ``tls_server_context``)."""
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
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await start_hl7_server(serve, "127.0.0.1", port, encoding="utf-8", ssl=tls)
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
