"""A gateway run as its own process (``python -m gateway serve``), as an operator would run it.

Tests start it on free ports, stop it gracefully or with SIGKILL, and start it
again on the same data directory.

``workers`` is ``serve.workers``: unless given, 1 (one process, no supervisor) for
the bulk of the suite, which is faster to start on a small machine, and the
product's default (one worker per CPU) with ``product_defaults`` (benchmarks). The
no-loss and fault tests also run with 2 workers under the supervisor
(``kill_worker`` SIGKILLs one of its children).

HTTP: the bulk of the suite sets plain HTTP explicitly (``http.plain``, as an operator
behind a TLS-terminating proxy does); ``https=True`` serves HTTPS with a certificate
from a trial CA the test makes, and ``product_defaults`` runs the product's own
default, HTTPS with the trial certificate the gateway makes in ``<data_dir>/tls``.
Either way ``base_url`` is https and ``ca_file`` / ``ssl_context()`` let clients trust it.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.settings import load_settings
from storage.index.database import IndexDatabase
from storage.object_store.base import ObjectStore
from tests.peers.ports import free_port

_START_TIMEOUT = 30.0


@dataclass
class GatewayProcess:
    data_dir: Path
    env: dict[str, str]
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    hl7_port: int = field(default_factory=free_port)
    ae_title: str = "PACSGW"
    product_defaults: bool = False  # True: no test speed-ups (benchmarks)
    # serve.workers; None: 1 for the bulk of the suite, the product's default (one per CPU) with product_defaults
    workers: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    token: str | None = None  # an administrator's bearer token, made before the first start
    https: bool = False  # HTTPS with a certificate of a trial CA made here (product_defaults: the gateway's own)
    _client_context: ssl.SSLContext | None = field(default=None, repr=False)

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def add_user(self, username: str, role: str, *, password: str = "", display_name: str = "") -> str:
        """Create a user in the gateway's index and return a bearer token for it."""
        from storage.index.accounts import AccountStore, Role

        index = self.open_index()
        try:
            accounts = AccountStore(index.engine)
            user = accounts.user(username) or accounts.add_user(
                username, Role(role), password=password, display_name=display_name
            )
            return accounts.issue_token(user, hours=None, label="tests")
        finally:
            index.close()

    @property
    def tls(self) -> bool:
        if self.env.get("PACSGW_HTTP_PLAIN", "").lower() in ("true", "1", "yes"):  # behind a proxy, as told
            return False
        return self.https or self.product_defaults

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.http_port}"

    @property
    def tls_dir(self) -> Path:
        """The trial CA and certificate: the test's (``https``) or the gateway's own (``product_defaults``)."""
        return self.data_dir / "tls" if self.product_defaults else self.data_dir.parent / f"{self.data_dir.name}-tls"

    @property
    def ca_file(self) -> Path | None:
        """The CA a client trusts the HTTPS server by (None over plain HTTP)."""
        return self.tls_dir / "ca.pem" if self.tls else None

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting ``ca_file`` (for urllib, aiohttp, ...); None over plain HTTP."""
        if self.ca_file is None:
            return None
        if self._client_context is None:
            self._client_context = ssl.create_default_context(cafile=str(self.ca_file))
        return self._client_context

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PACSGW_")}
        env.update(
            {
                "PACSGW_DATA_DIR": str(self.data_dir),
                "PACSGW_DICOM_PORT": str(self.dicom_port),
                "PACSGW_DICOM_HOST": "127.0.0.1",
                "PACSGW_DICOM_AE_TITLE": self.ae_title,
                "PACSGW_HTTP_PORT": str(self.http_port),
                "PACSGW_HTTP_HOST": "127.0.0.1",
                "PACSGW_HTTP_PUBLIC_URL": self.base_url,  # as an operator sets it (share links need it)
                "PACSGW_HL7_PORT": str(self.hl7_port),
                "PACSGW_HL7_HOST": "127.0.0.1",
                "PACSGW_LOG_LEVEL": "INFO",
                "PACSGW_SERVE_WORKERS": str(self.worker_count),
                # Test clients stand for readers inside the hospital: no TOTP code but for administrators.
                "PACSGW_LOGIN_TRUSTED_NETWORKS": "127.0.0.0/8",
            }
        )
        if not self.tls:
            env["PACSGW_HTTP_PLAIN"] = "true"
        elif self.https:
            env["PACSGW_HTTP_TLS_CERT_FILE"] = str(self.tls_dir / "server.pem")
            env["PACSGW_HTTP_TLS_KEY_FILE"] = str(self.tls_dir / "server.key")
        if not self.product_defaults:
            # Small segments: every test start zero-fills its spares.
            env.update({"PACSGW_SPOOL_SEGMENT_BYTES": str(8 << 20), "PACSGW_SPOOL_PREALLOCATED_SEGMENTS": "1"})
        env.update(self.env)
        return env

    @property
    def worker_count(self) -> int:
        if self.workers is not None:
            return self.workers
        return (os.cpu_count() or 1) if self.product_defaults else 1

    def settings(self):  # the same settings the process reads
        return load_settings(environ=self._environment())

    def start(self, wait_ready: bool = True) -> None:
        if self.token is None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.token = self.add_user("test-admin", "admin")
        if self.https and not (self.tls_dir / "server.pem").exists():
            from gateway.tls_certs import write_trial_set

            write_trial_set(self.tls_dir, ["localhost", "127.0.0.1"])
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            env=self._environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        timeout = _START_TIMEOUT * (1 if self.worker_count == 1 else 3)  # each process imports everything at once
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, body = self.get("/health")
                if status in (200, 503) and (body.get("ready") or not wait_ready) and self._all_workers(body):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway not ready within {timeout} s:\n{self.log_tail()}")

    def _all_workers(self, body: dict[str, Any]) -> bool:
        return self.worker_count == 1 or sum(w["alive"] for w in body.get("workers", ())) == self.worker_count

    def workers_view(self) -> list[dict[str, Any]]:
        """Every worker's entry in the administrator's /health (supervised gateways only)."""
        status, body = self.get("/health")
        assert "workers" in body, body
        return body["workers"]

    def kill_worker(self, index: int, *, wait_restart: bool = True, timeout: float = 3 * _START_TIMEOUT) -> int:
        """SIGKILL one worker process (not the supervisor); return its pid once its successor is serving."""
        [old] = [w["pid"] for w in self.workers_view() if w["worker"] == index]
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while wait_restart:
            try:
                view = {w["worker"]: w for w in self.workers_view()}
                if view[index]["alive"] and view[index]["pid"] != old:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {index} not restarted within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)
        return old

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the gateway, every process of it (its process group)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        elif self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # children a dead supervisor left
            except ProcessLookupError:
                pass
        self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def get(self, path: str, headers: dict[str, str] | None = None, *, auth: bool = True) -> tuple[int, Any]:
        """GET as the test administrator (``auth=False``: with no token, or with the headers given)."""
        return self.send("GET", path, headers=headers, auth=auth)

    def send(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, *, auth: bool = True
    ) -> tuple[int, Any]:
        """Any request, as ``get``; a body that is not bytes is sent as JSON."""
        sent = {**(self.auth_headers if auth and self.token else {}), **(headers or {})}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(self.base_url + path, data=data, headers=sent, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.ssl_context()) as response:
                raw, status, ctype = response.read(), response.status, response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            raw, status, ctype = err.read(), err.code, err.headers.get("Content-Type", "")
        if "json" in ctype:
            return status, json.loads(raw) if raw else None
        return status, raw.decode(errors="replace")

    def wait_idle(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until every acknowledged instance is stored and indexed (spool empty)."""
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            _, body = self.get("/health")
            if body["spool"]["backlog_instances"] == 0:
                return body
            time.sleep(0.1)
        raise AssertionError(f"spool not drained within {timeout} s: {body}")

    def audit_events(self, until: Callable[[list[dict]], bool], query: str = "limit=1000", timeout: float = 10.0) -> list[dict]:
        """The audit trail (newest first) once ``until`` holds for it: the gateway writes it in batches."""
        deadline = time.monotonic() + timeout
        while True:
            status, events = self.get(f"/audit?{query}")
            if status == 200 and until(events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"audit trail ({status}) not as expected within {timeout} s: {events}")
            time.sleep(0.1)

    def open_index(self) -> IndexDatabase:
        return IndexDatabase.open(self.settings().index_url)

    def open_store(self) -> ObjectStore:
        from gateway.service import open_object_store

        return open_object_store(self.settings())
