"""HAProxy (Debian's ``/usr/sbin/haproxy``) as the load balancer in front of several gateway nodes.

Three frontends on free ports: DICOM and MLLP in TCP mode, DICOMweb (HTTP) in
HTTP mode. Each backend holds every node, health-checked often (``tcp-check``
connect for DICOM and MLLP, ``GET /health/ingest`` expecting 200 for HTTP: the node
can take instances, even while its index is away), so that a
killed node leaves the rotation within a check interval and a restarted one
comes back as quickly. With ``send_proxy`` the DICOM and MLLP servers get a
PROXY protocol v2 header (``send-proxy-v2``) naming the client, as in
deploy/haproxy.cfg. The admin socket answers ``show stat``; tests poll it
to wait until servers are up or down.

``run_tls_front`` is HAProxy as a TLS-terminating proxy in front of one plain
service (the FHIR test server has no TLS of its own), optionally requiring a
client certificate.

    with run_haproxy(tmp_path, [Node("n1", 11112, 8042, 2575), ...]) as lb:
        lb.wait_state({"n1", "n2"}, "UP")
        storescu(lb.dicom_port, ...)
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from .ports import free_port

_HOST = "127.0.0.1"
HAPROXY = "/usr/sbin/haproxy"
_START_TIMEOUT = 20.0
BACKENDS = ("dicom", "mllp", "http")
HTTP_CHECK = "/health/ingest"  # as deploy/haproxy.cfg: a node that can take instances stays in


@dataclass(frozen=True)
class Node:
    """One gateway node as the balancer sees it: a name and its three ports on 127.0.0.1."""

    name: str
    dicom_port: int
    http_port: int
    hl7_port: int

    def port(self, backend: str) -> int:
        return {"dicom": self.dicom_port, "mllp": self.hl7_port, "http": self.http_port}[backend]


def haproxy_binary() -> str:
    found = HAPROXY if os.access(HAPROXY, os.X_OK) else shutil.which("haproxy")
    if found is None:
        raise FileNotFoundError("haproxy not found (Debian package 'haproxy'; scripts/test installs it)")
    return found


def render_config(
    nodes: Iterable[Node], *, dicom_port: int, http_port: int, mllp_port: int, admin_socket: str, check_ms: int = 250,
    send_proxy: bool = False,
) -> str:
    """The configuration: long client/server timeouts (an association may be idle for minutes), quick checks."""
    nodes = list(nodes)
    fronts = {"dicom": dicom_port, "mllp": mllp_port, "http": http_port}
    lines = [
        "global",
        f"    stats socket {admin_socket} mode 600 level admin",
        "    maxconn 4000",
        "",
        "defaults",
        "    timeout connect 2s",
        "    timeout client 10m",
        "    timeout server 10m",
        "    timeout check 1s",
        "    retries 3",
        "    option redispatch",  # a connection refused by a dead node is tried on another
        f"    default-server inter {check_ms}ms fastinter {check_ms}ms downinter {check_ms}ms rise 1 fall 1",
        "",
    ]
    for name in BACKENDS:
        mode = "http" if name == "http" else "tcp"
        lines += [f"frontend {name}", f"    mode {mode}", f"    bind {_HOST}:{fronts[name]}", f"    default_backend {name}_nodes", ""]
        lines += [f"backend {name}_nodes", f"    mode {mode}"]
        if mode == "http":
            lines += [
                "    balance roundrobin",
                "    option forwardfor",
                "    option httpchk",
                f"    http-check send meth GET uri {HTTP_CHECK}",
                "    http-check expect status 200",
            ]
        else:
            # An association or an MLLP session is long: spread sessions, not packets.
            lines += ["    balance leastconn", "    option tcp-check", "    tcp-check connect"]
        proxy = " send-proxy-v2" if send_proxy and mode == "tcp" else ""
        lines += [f"    server {node.name} {_HOST}:{node.port(name)} check{proxy} on-marked-down shutdown-sessions" for node in nodes]
        lines.append("")
    return "\n".join(lines)


@dataclass
class HAProxy:
    """A running HAProxy: its frontend ports and the admin socket."""

    dicom_port: int
    http_port: int
    mllp_port: int
    admin_socket: str
    config_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://{_HOST}:{self.http_port}"

    def command(self, line: str) -> str:
        """One admin-socket command (``show stat``, ``disable server dicom_nodes/n1``...); its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(self.admin_socket)
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def servers(self) -> dict[tuple[str, str], dict[str, str]]:
        """``show stat`` per (backend, server) for the node servers: status (UP/DOWN/...), check_status, scur..."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            (row["pxname"].removesuffix("_nodes"), row["svname"]): row
            for row in rows
            if row["svname"] not in ("FRONTEND", "BACKEND") and row["pxname"].endswith("_nodes")
        }

    def states(self) -> dict[tuple[str, str], str]:
        """(backend, server) -> "UP" once a check passed, "DOWN" once one failed, else what HAProxy says."""
        out = {}
        for key, row in self.servers().items():
            status, check = row["status"], row.get("check_status", "")
            out[key] = "UP" if status.startswith("UP") and check.endswith("OK") else status.split()[0]
        return out

    def wait_state(self, names: Iterable[str], state: str, timeout: float = 30.0, backends: Iterable[str] = BACKENDS) -> None:
        """Block until every named node is ``state`` ("UP" or "DOWN") in every backend, polling the admin socket."""
        wanted = {(backend, name) for backend in backends for name in names}
        deadline = time.monotonic() + timeout
        seen: dict[tuple[str, str], str] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.proc.returncode}:\n{self.log_tail()}")
            seen = self.states()
            if all(seen.get(key) == state for key in wanted):
                return
            time.sleep(0.05)
        raise TimeoutError(f"not all of {sorted(wanted)} {state} within {timeout} s: {seen}")

    def wait_any_up(self, backend: str, timeout: float = 30.0) -> str:
        """Block until some node is UP in ``backend`` (e.g. MLLP, where one node per site may listen); its name."""
        deadline = time.monotonic() + timeout
        seen: dict[tuple[str, str], str] = {}
        while time.monotonic() < deadline:
            seen = self.states()
            up = [name for (where, name), state in sorted(seen.items()) if where == backend and state == "UP"]
            if up:
                return up[0]
            time.sleep(0.05)
        raise TimeoutError(f"no node UP in {backend} within {timeout} s: {seen}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _socket_path(workdir: Path) -> tuple[str, str | None]:
    path = workdir / "admin.sock"
    if len(str(path)) < 100:
        return str(path), None
    short = tempfile.mkdtemp(prefix="haproxy-")
    return f"{short}/admin.sock", short


@contextmanager
def run_haproxy(workdir: Path, nodes: Iterable[Node], *, check_ms: int = 250, send_proxy: bool = False) -> Iterator[HAProxy]:
    """Start HAProxy in the foreground (``-db``) with a config in ``workdir``; SIGKILL it on exit.

    Yields once the admin socket answers; the nodes may still be down (start them after, then ``wait_state``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    nodes = list(nodes)
    admin_socket, short_dir = _socket_path(workdir)
    config_path, log_path = workdir / "haproxy.cfg", workdir / "haproxy.log"
    proxy: HAProxy | None = None
    try:
        for attempt in range(3):  # a port may be taken between probing and binding
            ports = {"dicom_port": free_port(), "http_port": free_port(), "mllp_port": free_port()}
            config_path.write_text(render_config(nodes, admin_socket=admin_socket, check_ms=check_ms, send_proxy=send_proxy, **ports))
            checked = subprocess.run([haproxy_binary(), "-c", "-q", "-f", str(config_path)], capture_output=True, text=True)
            if checked.returncode != 0:
                raise RuntimeError(f"haproxy rejects its config:\n{checked.stdout}{checked.stderr}")
            with log_path.open("ab") as log:
                proc = subprocess.Popen(
                    [haproxy_binary(), "-db", "-f", str(config_path)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            proxy = HAProxy(admin_socket=admin_socket, config_path=config_path, log_path=log_path, proc=proc, **ports)
            if _wait_admin(proxy):
                break
            proxy.stop()
            if attempt == 2:
                raise RuntimeError(f"haproxy did not start:\n{proxy.log_tail()}")
        assert proxy is not None
        yield proxy
    finally:
        if proxy is not None:
            proxy.stop()
        if short_dir:
            shutil.rmtree(short_dir, ignore_errors=True)


def _wait_admin(proxy: HAProxy) -> bool:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proxy.proc.poll() is not None:
            return False  # e.g. a frontend port taken meanwhile
        with suppress(OSError):
            if "pxname" in proxy.command("show stat"):
                return True
        time.sleep(0.05)
    return False


@contextmanager
def run_tls_front(
    workdir: Path, backend_port: int, *, cert_file: Path, key_file: Path, client_ca_file: Path | None = None
) -> Iterator[int]:
    """HAProxy terminating TLS (1.2 or newer) in front of a plain TCP service on ``backend_port``, e.g. the FHIR
    server; with ``client_ca_file`` it requires a client certificate from that CA (``verify required``).
    Yields the TLS port once it accepts connections."""
    workdir.mkdir(parents=True, exist_ok=True)
    bundle = workdir / "front.pem"  # HAProxy reads the certificate and its key from one file
    bundle.touch(mode=0o600)
    bundle.write_bytes(cert_file.read_bytes() + key_file.read_bytes())
    verify = f" ca-file {client_ca_file} verify required" if client_ca_file else ""
    config_path, log_path = workdir / "haproxy-tls.cfg", workdir / "haproxy-tls.log"
    for attempt in range(3):  # a port may be taken between probing and binding
        port = free_port()
        config_path.write_text("\n".join([
            "global", "    maxconn 200", "",
            "defaults", "    mode tcp", "    timeout connect 2s", "    timeout client 1m", "    timeout server 1m", "",
            "frontend tls", f"    bind {_HOST}:{port} ssl crt {bundle} ssl-min-ver TLSv1.2{verify}", "    default_backend plain", "",
            "backend plain", f"    server service {_HOST}:{backend_port}", "",
        ]))  # fmt: skip
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [haproxy_binary(), "-db", "-f", str(config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            with suppress(OSError):
                socket.create_connection((_HOST, port), timeout=1).close()
                break
            time.sleep(0.05)
        if proc.poll() is None and time.monotonic() < deadline:
            break
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if attempt == 2:
            raise RuntimeError(f"haproxy (TLS front) did not start:\n{log_path.read_text(errors='replace')[-2000:]}")
    try:
        yield port
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
