"""The ``[s3]`` encryption and TLS settings: keys from settings or a protected file, and what is refused."""

from __future__ import annotations

import base64
import re
import secrets
from pathlib import Path

import pytest

from gateway.settings import SettingsError, load_settings, redacted

KEY = secrets.token_bytes(32)
LOCAL = {"PACSGW_S3_ENDPOINT": "127.0.0.1:9000", "PACSGW_S3_SECURE": "false"}


def test_default_is_no_encryption_and_https_with_the_profile() -> None:
    s3 = load_settings(environ={}).s3
    assert s3.sse == "none" and not s3.encryption().enabled
    context = s3.tls_context()
    assert context is not None and context.minimum_version.name == "TLSv1_2"


def test_customer_key_from_settings_as_base64_or_hex_and_redacted() -> None:
    for text in (base64.b64encode(KEY).decode(), KEY.hex()):
        settings = load_settings(environ={**LOCAL, "PACSGW_S3_SSE": "sse-c", "PACSGW_S3_SSE_CUSTOMER_KEY": text})
        assert settings.s3.encryption().customer_key == KEY
        assert redacted(settings)["s3"]["sse_customer_key"] == "***"
    kms = load_settings(environ={"PACSGW_S3_SSE": "sse-kms", "PACSGW_S3_SSE_KMS_KEY_ID": "arn:aws:kms:k"}).s3
    assert kms.encryption().write_headers()["X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id"] == "arn:aws:kms:k"


def test_customer_key_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "sse-c.key"
    path.write_text(base64.b64encode(KEY).decode() + "\n")
    env = {**LOCAL, "PACSGW_S3_SSE": "sse-c", "PACSGW_S3_SSE_CUSTOMER_KEY_FILE": str(path)}
    path.chmod(0o640)
    with pytest.raises(SettingsError, match=re.escape("may be read or changed by other users (mode 0640)")):
        load_settings(environ=env).s3.encryption()
    path.chmod(0o600)
    assert load_settings(environ=env).s3.encryption().customer_key == KEY


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PACSGW_S3_SSE": "sse-c"}, "neither s3.sse_customer_key nor s3.sse_customer_key_file"),
        ({"PACSGW_S3_SSE": "sse-c", "PACSGW_S3_SSE_CUSTOMER_KEY": "c2hvcnQ="}, "an SSE-C key is 256 bits"),
        ({"PACSGW_S3_SSE_CUSTOMER_KEY": KEY.hex()}, "s3.sse is not 'sse-c'"),
        ({"PACSGW_S3_SSE_KMS_KEY_ID": "k"}, "s3.sse is not 'sse-kms'"),
        ({"PACSGW_S3_SSE_CUSTOMER_KEY_FILE": "/absent"}, "s3.sse is not 'sse-c'"),
        ({"PACSGW_S3_SSE": "sse-c", "PACSGW_S3_SSE_CUSTOMER_KEY_FILE": "/absent"}, "cannot read it"),
    ],
)
def test_bad_encryption_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings(environ={**LOCAL, **env}).s3.encryption()


def test_sse_c_key_never_crosses_the_network_in_clear() -> None:
    env = {"PACSGW_S3_SSE": "sse-c", "PACSGW_S3_SSE_CUSTOMER_KEY": KEY.hex(), "PACSGW_S3_SECURE": "false"}
    with pytest.raises(SettingsError, match="the key would cross the network in clear"):
        load_settings(environ={**env, "PACSGW_S3_ENDPOINT": "s3.hospital.vn:9000"}).s3.encryption()
    assert load_settings(environ={**env, "PACSGW_S3_ENDPOINT": "[::1]:9000"}).s3.encryption().enabled
    with pytest.raises(SettingsError, match="s3 CA bundle"):
        load_settings(environ={"PACSGW_S3_CA_FILE": "/absent.pem"}).s3.tls_context()
