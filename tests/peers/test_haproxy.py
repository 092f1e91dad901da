"""HAProxy peer: nodes come into the rotation once their checks pass and leave it when they stop answering."""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.peers.haproxy import HTTP_CHECK, Node, run_haproxy
from tests.peers.ports import free_port


@contextmanager
def _fake_node(name: str) -> Iterator[Node]:
    """Listeners standing where a gateway would: TCP for DICOM and MLLP, an HTTP server answering /health."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = name.encode()
            self.send_response(200 if self.path in ("/health", HTTP_CHECK) else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    tcp = [socket.create_server(("127.0.0.1", free_port())) for _ in range(2)]
    web = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    try:
        yield Node(name, tcp[0].getsockname()[1], web.server_address[1], tcp[1].getsockname()[1])
    finally:
        web.shutdown()
        web.server_close()
        for sock in tcp:
            sock.close()


def test_nodes_enter_and_leave_the_rotation(tmp_path: Path) -> None:
    with _fake_node("n1") as n1, _fake_node("n2") as n2:
        with run_haproxy(tmp_path, [n1, n2]) as lb:
            lb.wait_state({"n1", "n2"}, "UP")
            answered = {urllib.request.urlopen(lb.base_url + "/health", timeout=5).read() for _ in range(4)}
            assert answered == {b"n1", b"n2"}
    # n2 stopped: its checks fail, only n1 answers.
    with _fake_node("n1") as n1:
        gone = Node("n2", free_port(), free_port(), free_port())
        with run_haproxy(tmp_path / "again", [n1, gone]) as lb:
            lb.wait_state({"n1"}, "UP")
            lb.wait_state({"n2"}, "DOWN")
            assert {urllib.request.urlopen(lb.base_url + "/health", timeout=5).read() for _ in range(4)} == {b"n1"}
            with socket.create_connection(("127.0.0.1", lb.dicom_port), timeout=5):
                pass
