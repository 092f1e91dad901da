"""Settings of the audit repository: a bad one stops start-up with a clear message, and changes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.atna.offbox import OffBoxTrail
from gateway.settings import SettingsError, load_settings
from gateway.tls_certs import TrialCa


def _settings(tmp_path: Path, **audit: str):  # noqa: ANN202
    env = {"PACSGW_DATA_DIR": str(tmp_path / "data"), **{f"PACSGW_AUDIT_{k.upper()}": v for k, v in audit.items()}}
    return load_settings(environ=env)


def test_no_repository_no_spool(tmp_path: Path) -> None:
    assert OffBoxTrail.open(_settings(tmp_path), "gateway") is None
    assert not (tmp_path / "data" / "audit-spool").exists()


@pytest.mark.parametrize(
    ("audit", "message"),
    [
        ({"syslog_port": "70000"}, "audit.syslog_port must be a TCP port"),
        ({"confirm_seconds": "-1"}, "audit.confirm_seconds"),
        ({"ca_file": "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"),
        ({"cert_file": "CERT"}, "both its certificate file and its key file"),
    ],
)
def test_a_bad_setting_is_refused_before_anything_is_spooled(tmp_path: Path, audit: dict[str, str], message: str) -> None:
    ca = TrialCa.create(tmp_path / "ca")
    audit = {k: v.replace("CERT", str(ca.cert_file)) for k, v in audit.items()}
    with pytest.raises(SettingsError, match=message):
        OffBoxTrail.open(_settings(tmp_path, syslog_host="localhost", **audit), "gateway")
    assert not (tmp_path / "data" / "audit-spool").exists()


def test_a_client_key_others_may_read_is_refused(tmp_path: Path) -> None:
    ca = TrialCa.create(tmp_path / "ca")
    client = ca.issue(tmp_path / "ca", "client", "pacsgw", client=True)
    os.chmod(client.key_file, 0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        OffBoxTrail.open(_settings(tmp_path, syslog_host="localhost", ca_file=str(ca.cert_file),
                                   cert_file=str(client.cert_file), key_file=str(client.key_file)), "gateway")  # fmt: skip
    os.chmod(client.key_file, 0o600)
    trail = OffBoxTrail.open(_settings(tmp_path, syslog_host="localhost", ca_file=str(ca.cert_file),
                                       cert_file=str(client.cert_file), key_file=str(client.key_file)), "gateway")  # fmt: skip
    assert trail is not None and trail.source.process == "gateway"
    trail.close()
