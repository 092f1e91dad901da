"""The `[dicom_tls]` settings: the TLS port, the AE binding of client certificates, TLS destinations."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import SettingsError, load_settings
from gateway.settings_security import TlsDestination

TLS = {"PACSGW_DICOM_TLS_PORT": "2762", "PACSGW_DICOM_TLS_CERTIFICATE_FILE": "/etc/pacs/gw.pem",
       "PACSGW_DICOM_TLS_PRIVATE_KEY_FILE": "/etc/pacs/gw.key"}  # fmt: skip


def test_off_by_default() -> None:
    settings = load_settings(environ={})
    assert not settings.dicom_tls.enabled and settings.dicom_tls.plain
    assert settings.dicom_tls.tls_destinations() == {} and settings.dicom_tls.ae_binding() == {}


def test_destinations_parse_once_into_value_objects() -> None:
    settings = load_settings(environ={"PACSGW_DICOM_TLS_DESTINATIONS": "WS1, ORTHANC;ca=/etc/ca.pem;cert=/etc/gw.pem;key=/etc/gw.key;name=orthanc.lan"})
    assert settings.dicom_tls.tls_destinations() == {
        "WS1": TlsDestination("WS1"),
        "ORTHANC": TlsDestination("ORTHANC", "/etc/ca.pem", "/etc/gw.pem", "/etc/gw.key", "orthanc.lan"),
    }


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("WS1;ca", "not one of ca=PATH"),
        ("WS1;color=red", "not one of ca=PATH"),
        ("WS1;ca=/a;ca=/b", "ca= twice"),
        ("WS1;cert=/etc/gw.pem", "needs both cert= and key="),
        (";ca=/a", "does not start with an AE title"),
        ("A_TITLE_LONGER_THAN_16;ca=/a", "does not start with an AE title"),
    ],
)
def test_a_malformed_destination_is_named(entry: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as error:
        load_settings(environ={"PACSGW_DICOM_TLS_DESTINATIONS": entry})
    assert "dicom_tls.destinations" in str(error.value)


def test_a_destination_listed_twice_is_refused() -> None:
    with pytest.raises(SettingsError, match="WS1 is listed twice"):
        load_settings(environ={"PACSGW_DICOM_TLS_DESTINATIONS": "WS1,WS1;ca=/a"})


def test_binding_collects_titles_per_certificate_name() -> None:
    settings = load_settings(environ={**TLS, "PACSGW_DICOM_TLS_CLIENT_CA_FILE": "/etc/ca.pem",
                                      "PACSGW_DICOM_TLS_CLIENT_AETS": "CT01=CT01,ct.lan=CT02,CT.LAN=CT03"})  # fmt: skip
    assert settings.dicom_tls.ae_binding() == {"ct01": {"CT01"}, "ct.lan": {"CT02", "CT03"}}
    with pytest.raises(SettingsError, match="is not NAME=AE"):
        load_settings(environ={**TLS, "PACSGW_DICOM_TLS_CLIENT_CA_FILE": "/c", "PACSGW_DICOM_TLS_CLIENT_AETS": "CT01"})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PACSGW_DICOM_TLS_PLAIN": "false"}, "would receive no DICOM"),
        ({"PACSGW_DICOM_TLS_PORT": "2762"}, "certificate_file and private_key_file are needed"),
        ({**TLS, "PACSGW_DICOM_TLS_REQUIRE_CLIENT_CERTIFICATE": "true"}, "need dicom_tls.client_ca_file"),
        ({**TLS, "PACSGW_DICOM_TLS_CLIENT_AETS": "CT01=CT01"}, "need dicom_tls.client_ca_file"),
        ({**TLS, "PACSGW_DICOM_PORT": "2762"}, "must differ from dicom.port"),
        ({**TLS, "PACSGW_DICOM_TLS_PORT": "70000"}, "must be a TCP port"),
    ],
)
def test_incoherent_settings_stop_start_up(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(environ=environ)


def test_tls_only_is_allowed() -> None:
    settings = load_settings(environ={**TLS, "PACSGW_DICOM_TLS_PLAIN": "false", "PACSGW_DICOM_PORT": "2762"})
    assert settings.dicom_tls.enabled and not settings.dicom_tls.plain


def test_the_readme_example_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("[dicom_tls]\nport = 2762")
    (tmp_path / "gateway.toml").write_text(readme[start : readme.index("```", start)])
    tls = load_settings(tmp_path / "gateway.toml", environ={}).dicom_tls
    assert tls.enabled and not tls.plain and tls.ae_binding()["mr01.hospital.lan"] == {"MR01", "MR01_QC"}
    assert tls.tls_destinations()["WORKSTATION1"].server_name == "ws1.hospital.lan"
