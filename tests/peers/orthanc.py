"""A private Orthanc PACS (Debian package) on ephemeral ports for tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ports import free_port
from .process import stop_group, wait_http_ready

_HOST = "127.0.0.1"
_DEBIAN_BINARY = "/usr/sbin/Orthanc"
_STARTUP_TIMEOUT = 30.0
# DCMTK (linked into Orthanc) only sets TCP_NODELAY on DICOM sockets when this
# variable is set; without it Nagle + delayed ACK cap throughput at ~20 instances/s.
DCMTK_ENV = {"TCP_NODELAY": "1"}


def orthanc_binary() -> str:
    found = shutil.which("Orthanc")
    if found is None and os.access(_DEBIAN_BINARY, os.X_OK):
        found = _DEBIAN_BINARY
    if found is None:
        raise FileNotFoundError("Orthanc not found (Debian package 'orthanc')")
    return found


def dcmtk_binary(name: str) -> str:
    """Path of a DCMTK tool (e.g. ``echoscu``), skipping pynetdicom's same-named venv scripts."""
    venv_scripts = Path(sysconfig.get_path("scripts")).resolve()
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    path = os.pathsep.join(d for d in [*dirs, "/usr/bin"] if Path(d).resolve() != venv_scripts)
    found = shutil.which(name, path=path)
    if found is None:
        raise FileNotFoundError(f"DCMTK tool {name!r} not found (Debian package 'dcmtk')")
    return found


@dataclass
class OrthancServer:
    dicom_port: int
    http_port: int
    aet: str
    pid: int
    host: str = _HOST

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.base_url + path, timeout=10) as response:
            return json.load(response)


def _config(workdir: Path, aet: str, dicom_port: int, http_port: int,
            plugins: Sequence[str], overrides: Mapping[str, Any]) -> dict[str, Any]:
    storage = str(workdir / "storage")
    return {
        "Name": f"test-{aet}",
        "StorageDirectory": storage,
        "IndexDirectory": storage,
        "StorageCompression": False,
        "Plugins": list(plugins),  # explicit: never pick up /usr/share/orthanc/plugins
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "WebDavEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "SaveJobs": False,
        **overrides,
    }


@contextmanager
def run_orthanc(
    workdir: Path,
    aet: str = "ORTHANC",
    plugins: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
) -> Iterator[OrthancServer]:
    """Run Orthanc with a generated config in ``workdir``; ``config`` overrides any key."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "orthanc.json"
    log_path = workdir / "orthanc.log"
    for attempt in range(3):  # a port may be grabbed between probing and binding
        dicom_port, http_port = free_port(), free_port()
        while http_port == dicom_port:
            http_port = free_port()
        settings = _config(workdir, aet, dicom_port, http_port, plugins, config or {})
        dicom_port, http_port = settings["DicomPort"], settings["HttpPort"]
        config_path.write_text(json.dumps(settings, indent=2))
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [orthanc_binary(), str(config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=workdir, env={**os.environ, **DCMTK_ENV}, start_new_session=True,
            )
        try:
            wait_http_ready(proc, f"http://{_HOST}:{http_port}/system", log_path, _STARTUP_TIMEOUT, "Orthanc")
            break
        except RuntimeError:
            stop_group(proc)
            if attempt == 2:
                raise
        except BaseException:
            stop_group(proc)
            raise
    try:
        yield OrthancServer(dicom_port=dicom_port, http_port=http_port, aet=aet, pid=proc.pid)
    finally:
        stop_group(proc)
