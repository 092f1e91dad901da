"""Smoke tests proving each locally launched peer really works."""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import urllib3
from minio.error import S3Error

from .orthanc import DCMTK_ENV, dcmtk_binary, run_orthanc
from .ports import free_port, free_port_pair, wait_for_port
from .postgres import run_postgres
from .seaweedfs import run_seaweedfs


def test_ports() -> None:
    assert 0 < free_port() < 65536
    port = free_port_pair(10000)
    assert port + 10000 <= 65535
    with pytest.raises(TimeoutError):
        wait_for_port("127.0.0.1", free_port(), timeout=0.2)


def test_seaweedfs_auth_put_get_and_restart(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with run_seaweedfs(tmp_path) as s3:
        print(f"seaweedfs ready in {time.monotonic() - t0:.2f}s")
        client = s3.client()
        client.make_bucket("peers-test")
        client.put_object("peers-test", "a/b.txt", io.BytesIO(b"hello"), 5)
        assert client.get_object("peers-test", "a/b.txt").read() == b"hello"

        with pytest.raises(S3Error) as refused:
            s3.client(secret_key="wrong-secret").get_object("peers-test", "a/b.txt")
        assert refused.value.code == "SignatureDoesNotMatch"
        anonymous = urllib3.PoolManager().request("GET", f"http://{s3.endpoint}/peers-test/a/b.txt")
        assert anonymous.status == 403

        s3.stop()
        assert not s3.running
        with pytest.raises(Exception):
            s3.client(timeout=1).bucket_exists("peers-test")
        t0 = time.monotonic()
        s3.start()
        print(f"seaweedfs restarted in {time.monotonic() - t0:.2f}s")
        assert client.get_object("peers-test", "a/b.txt").read() == b"hello"
        client.put_object("peers-test", "c.txt", io.BytesIO(b"again"), 5)
        assert client.get_object("peers-test", "c.txt").read() == b"again"


def test_postgres(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with run_postgres(tmp_path) as pg:
        print(f"postgres ready in {time.monotonic() - t0:.2f}s")
        assert pg.port != 5432
        engine = sa.create_engine(pg.url("postgres"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar() == 1
        engine.dispose()

        url = pg.create_database("gateway_test")
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("select current_database()")).scalar() == "gateway_test"
        engine.dispose()

        bad = sa.create_engine(pg.url("postgres").replace(pg.password, "wrong"))
        with pytest.raises(sa.exc.OperationalError):
            bad.connect()
        bad.dispose()


def test_orthanc(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with run_orthanc(tmp_path, aet="PEERTEST") as orthanc:
        print(f"orthanc ready in {time.monotonic() - t0:.2f}s")
        system = orthanc.get_json("/system")
        assert system["DicomAet"] == "PEERTEST"
        assert system["DicomPort"] == orthanc.dicom_port
        assert set(orthanc.get_json("/plugins")) <= {"explorer.js"}  # built-in pseudo-entry

        echo = subprocess.run(
            [dcmtk_binary("echoscu"), "-aet", "PEERSCU", "-aec", orthanc.aet,
             "127.0.0.1", str(orthanc.dicom_port)],
            env={**os.environ, **DCMTK_ENV}, capture_output=True, text=True, timeout=30,
        )
        assert echo.returncode == 0, echo.stderr
        pid = orthanc.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
