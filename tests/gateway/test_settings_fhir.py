"""The ``[fhir]`` settings of the EMR link: defaults, environment, the token file, and what is refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.settings import SettingsError, load_settings, redacted


def test_defaults_leave_the_link_off_with_vietnamese_systems() -> None:
    fhir = load_settings(environ={}).fhir
    assert fhir.base_url == "" and fhir.stable_seconds == 60.0
    assert fhir.citizen_id_system == "http://fhir.hl7.org.vn/core/sid/cccd"
    assert fhir.insurance_number_system == "http://fhir.hl7.org.vn/core/sid/bhyt"
    assert fhir.mrn_systems() == {"*": "http://fhir.ehealth.gov.vn/core/sid/patient-internal-id"}
    assert fhir.timezone == "Asia/Ho_Chi_Minh" and fhir.bearer_token() == ""


def test_environment_and_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\nignored\n")
    s = load_settings(environ={
        "PACSGW_FHIR_BASE_URL": "https://emr.example.vn/fhir/R4", "PACSGW_FHIR_TOKEN_FILE": str(token_file),
        "PACSGW_FHIR_PATIENT_IDENTIFIER_SYSTEMS": "BV-CHORAY=urn:oid:1.2.3, *=urn:oid:9.9",
        "PACSGW_FHIR_STABLE_SECONDS": "1.5",
    })  # fmt: skip
    assert s.fhir.bearer_token() == "s3cret-token" and s.fhir.stable_seconds == 1.5
    assert s.fhir.mrn_systems() == {"BV-CHORAY": "urn:oid:1.2.3", "*": "urn:oid:9.9"}
    assert redacted(load_settings(environ={"PACSGW_FHIR_TOKEN": "t0k"}))["fhir"]["token"] == "***"
    missing = load_settings(environ={"PACSGW_FHIR_TOKEN_FILE": str(tmp_path / "absent")})
    with pytest.raises(SettingsError, match="fhir.token_file"):
        missing.fhir.bearer_token()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PACSGW_FHIR_BASE_URL": "emr.example.vn/fhir"}, "fhir.base_url must be an http"),
        ({"PACSGW_FHIR_RETRY_INITIAL_SECONDS": "10", "PACSGW_FHIR_RETRY_MAX_SECONDS": "5"}, "fhir.retry_initial_seconds"),
        ({"PACSGW_FHIR_TIMEOUT_SECONDS": "0"}, "fhir.timeout_seconds"),
        ({"PACSGW_FHIR_PATIENT_IDENTIFIER_SYSTEMS": "urn:oid:1.2.3"}, "is not ISSUER=SYSTEM"),
        ({"PACSGW_FHIR_TIMEZONE": "Asia/Saigon-ish"}, "unknown time zone"),
    ],
)
def test_bad_fhir_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings(environ=env)
