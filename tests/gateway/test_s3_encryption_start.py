"""Journey: an operator turns on SSE-C; the gateway files and serves encrypted objects, and refuses to start unsafe."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import pytest
from minio.error import S3Error

from tests.conftest import s3_env, storescu
from tests.factory import ct_series, write_files
from tests.gateway_process import GatewayProcess


def test_sse_c_gateway_stores_and_serves_objects_only_it_can_read(start_gateway, s3_server, tmp_path: Path) -> None:
    key_file = tmp_path / "sse-c.key"
    key_file.write_text(secrets.token_hex(32) + "\n")
    key_file.chmod(0o600)
    env = {**s3_env(s3_server, f"ssec-{uuid.uuid4().hex[:10]}"), "PACSGW_S3_SSE": "sse-c",
           "PACSGW_S3_SSE_CUSTOMER_KEY_FILE": str(key_file)}  # fmt: skip
    gateway = start_gateway(env)
    series = ct_series(3, size=32)
    assert storescu(gateway.dicom_port, write_files(series, tmp_path / "ct")).returncode == 0
    gateway.wait_idle()
    status, health = gateway.get("/health")
    assert health["object_store"]["encryption"] == "SSE-C applied by the server (probed)"
    assert "412" in health["object_store"]["conformance"]  # the create-only probe went with the key too

    study = series[0].StudyInstanceUID
    status, body = gateway.get(f"/dicom-web/studies/{study}", {"Accept": 'multipart/related; type="application/dicom"'})
    assert status == 200 and all(ds.SOPInstanceUID in body for ds in series)
    keys = s3_server.client().list_objects(env["PACSGW_S3_BUCKET"], prefix="studies/", recursive=True)
    names = [obj.object_name for obj in keys]
    assert len(names) == 3
    with pytest.raises(S3Error):  # the bucket's own credentials, without the key
        s3_server.client().get_object(env["PACSGW_S3_BUCKET"], names[0])


def _refused_start(tmp_path: Path, env: dict[str, str]) -> str:
    gateway = GatewayProcess(tmp_path / "gw", env)
    try:
        with pytest.raises(RuntimeError, match="gateway exited with") as failed:
            gateway.start()
    finally:
        gateway.kill()
    return str(failed.value)


def test_encryption_the_server_does_not_apply_stops_the_start(s3_server, tmp_path: Path) -> None:
    env = {**s3_env(s3_server, f"sse-{uuid.uuid4().hex[:10]}"), "PACSGW_S3_SSE": "sse-kms"}
    message = _refused_start(tmp_path, env)
    assert "s3.sse = 'sse-kms'" in message and "refused a write with SSE-KMS" in message


def test_a_key_file_others_may_read_stops_the_start(s3_server, tmp_path: Path) -> None:
    key_file = tmp_path / "sse-c.key"
    key_file.write_text(secrets.token_hex(32) + "\n")
    key_file.chmod(0o644)
    env = {**s3_env(s3_server, "unused"), "PACSGW_S3_SSE": "sse-c", "PACSGW_S3_SSE_CUSTOMER_KEY_FILE": str(key_file)}
    assert "chmod 600" in _refused_start(tmp_path, env)


def test_encryption_asked_of_the_local_store_stops_the_start(tmp_path: Path) -> None:
    message = _refused_start(tmp_path, {"PACSGW_S3_SSE": "sse-s3"})
    assert "storage.backend is 'local'" in message and "encrypted volume" in message
