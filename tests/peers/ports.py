"""Ephemeral TCP port helpers for the locally launched test peers."""

from __future__ import annotations

import socket
import time

_HOST = "127.0.0.1"


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
        return True


_handed_out: set[int] = set()


def free_port() -> int:
    """Return a port the kernel currently considers free on 127.0.0.1, never one returned before in this process.

    The kernel may offer a port again as soon as the probe closes it: a gateway asking for its DICOM, HTTP and
    HL7 ports in a row could get one port twice and then fail to bind it."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((_HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def free_port_pair(offset: int, attempts: int = 200) -> int:
    """Return a free port ``p`` such that ``p + offset`` is free as well."""
    for _ in range(attempts):
        port = free_port()
        if port + offset <= 65535 and _is_free(port + offset):
            return port
    raise RuntimeError(f"no free port pair with offset {offset} found")


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Block until ``host:port`` accepts TCP connections, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{host}:{port} not accepting connections after {timeout}s")
            time.sleep(0.05)
