"""Fixtures for real peers: SeaweedFS (S3), PostgreSQL, the gateway as a process, DCMTK tools."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.tls_certs import TrialCa
from storage.index.database import IndexDatabase
from tests.gateway_process import GatewayProcess
from tests.peers.orthanc import DCMTK_ENV, dcmtk_binary
from tests.peers.postgres import PostgresServer, run_postgres
from tests.peers.rsyslog import Rsyslog
from tests.peers.seaweedfs import S3Server, run_seaweedfs


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with run_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with run_postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IndexDatabase]:
    """A fresh index on SQLite (the embedded default) and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database(f"idx_{uuid.uuid4().hex[:10]}")
    db = IndexDatabase.open(url)
    yield db
    db.close()


def s3_env(server: S3Server, bucket: str) -> dict[str, str]:
    return {
        "PACSGW_STORAGE_BACKEND": "s3",
        "PACSGW_S3_ENDPOINT": server.endpoint,
        "PACSGW_S3_BUCKET": bucket,
        "PACSGW_S3_ACCESS_KEY": server.access_key,
        "PACSGW_S3_SECRET_KEY": server.secret_key,
        "PACSGW_S3_SECURE": "false",
        "PACSGW_S3_REGION": server.region,
        "PACSGW_S3_CONNECT_TIMEOUT": "1",
        "PACSGW_SPOOL_RETRY_MAX_SECONDS": "1",
    }


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start gateways as processes; every one is killed at teardown."""
    started: list[GatewayProcess] = []

    def start(
        env: dict[str, str] | None = None, name: str = "gw", wait_ready: bool = True, workers: int | None = None
    ) -> GatewayProcess:
        gateway = GatewayProcess(tmp_path / name, dict(env or {}), workers=workers)
        started.append(gateway)
        gateway.start(wait_ready=wait_ready)
        return gateway

    yield start
    for gateway in started:
        gateway.kill()


@pytest.fixture(params=["local", "s3"])
def backend_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The same journey against the local object store and against a real S3 server."""
    if request.param == "local":
        return {}
    server: S3Server = request.getfixturevalue("s3_server")
    return s3_env(server, f"test-{uuid.uuid4().hex[:12]}")


def storescu(
    port: int, files: list[Path], *, calling: str = "MODALITY", called: str = "PACSGW", options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Send files with DCMTK's storescu (one association)."""
    return subprocess.run(
        [dcmtk_binary("storescu"), *options, "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, files)],
        env={**os.environ, **DCMTK_ENV},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Rsyslog]:
    """An audit record repository of the test's own: rsyslog taking syslog over TLS (a trial CA's certificate)."""
    server = Rsyslog(tmp_path / "rsyslog", TrialCa.create(tmp_path / "ca"))
    server.start()
    yield server
    server.kill()
