from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.settings import SettingsError, load_settings, redacted, reference_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_embedded_ones() -> None:
    s = load_settings(environ={})
    assert (s.dicom.port, s.dicom.ae_title, s.http.port, s.data_dir) == (11112, "PACSGW", 8042, "./data")
    assert s.storage.backend == "local" and s.index_url.startswith("sqlite:///")


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('data_dir = "/srv/pacs"\n[dicom]\nport = 104\nae_title = "FILE"\n[s3]\nsecure = false\n')
    s = load_settings(config, environ={"PACSGW_DICOM_PORT": "4242", "PACSGW_DICOM_ALLOWED_CALLING_AETS": "CT1, MR1"})
    assert (s.data_dir, s.dicom.port, s.dicom.ae_title, s.s3.secure) == ("/srv/pacs", 4242, "FILE", False)
    assert s.dicom.allowed_calling_aets == ["CT1", "MR1"]
    s = load_settings(config, environ={"PACSGW_DICOM_PORT": "4242"}, overrides={"dicom": {"port": 11113}})
    assert s.dicom.port == 11113


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[dicom]\nprot = 1\n", {}, "unknown option 'prot'"),
        ("", {"PACSGW_DICOM_PORT": "eleven"}, "PACSGW_DICOM_PORT: expected int"),
        ("", {"PACSGW_STORAGE_BACKEND": "ftp"}, "is not one of"),
        ("", {"PACSGW_STORAGE_BACKEND": "s3"}, "s3.endpoint is empty"),
        ("", {"PACSGW_DICOM_AE_TITLE": "A" * 17}, "1 to 16 characters"),
        ("[dicom\n", {}, "gw.toml"),
    ],
)
def test_bad_settings_say_what_is_wrong(tmp_path: Path, toml: str, env: dict, message: str) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(toml)
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings(config, environ=env)


def test_secrets_are_masked() -> None:
    s = load_settings(environ={"PACSGW_S3_SECRET_KEY": "hunter2"})
    assert redacted(s)["s3"]["secret_key"] == "***"


def test_readme_documents_every_option() -> None:
    readme = (ROOT / "README.md").read_text()
    assert reference_markdown() in readme, "README configuration reference is stale: run `pacs-gateway config --reference`"
