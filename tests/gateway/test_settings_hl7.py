"""The [hl7] section and dicom.worklist_aets: defaults, the environment, and refusals that say what is wrong."""

from __future__ import annotations

import re

import pytest

from gateway.settings import SettingsError, load_settings


def test_defaults_and_environment() -> None:
    s = load_settings(environ={})
    assert (s.hl7.port, s.hl7.encoding, s.hl7.outbound_host, s.dicom.worklist_aets) == (2575, "UTF-8", "", [])
    s = load_settings(environ={"PACSGW_HL7_STATION_AETS": "ct=CT01, MR=MR01", "PACSGW_DICOM_WORKLIST_AETS": "*"})
    assert s.hl7.station_map() == {"CT": "CT01", "MR": "MR01"} and s.dicom.worklist_aets == ["*"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PACSGW_HL7_PORT": "70000"}, "hl7.port must be a TCP port"),
        ({"PACSGW_HL7_OUTBOUND_HOST": "emr.local"}, "hl7.outbound_host and hl7.outbound_port go together"),
        ({"PACSGW_HL7_ENCODING": "klingon"}, "hl7.encoding: unknown encoding"),
        ({"PACSGW_HL7_STATION_AETS": "CT"}, "is not MODALITY=AE"),
        ({"PACSGW_HL7_STATION_AETS": "CT=" + "A" * 17}, "is not MODALITY=AE"),
        ({"PACSGW_HL7_ALLOWED_PEERS": "10.0.0.0/33"}, "hl7.allowed_peers"),
        ({"PACSGW_HL7_OUTBOUND_TIMEOUT_SECONDS": "0"}, "must be positive"),
        ({"PACSGW_HL7_OUTBOUND_TLS_CA_FILE": "/etc/emr-ca.pem"}, "hl7.outbound_tls_* are set but hl7.outbound_tls is off"),
        ({"PACSGW_HL7_TLS_REQUIRE_CLIENT_CERT": "true"}, "tls_require_client_cert need hl7.tls_cert_file"),
        ({"PACSGW_HL7_TLS_KEY_FILE": "/etc/hl7.key"}, "need hl7.tls_cert_file"),
        ({"PACSGW_FHIR_BASE_URL": "http://emr.local/fhir", "PACSGW_FHIR_TLS_CA_FILE": "/etc/ca.pem"},
         "fhir.tls_* are set but fhir.base_url is not an https:// URL"),
    ],
)
def test_bad_hl7_settings_say_what_is_wrong(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings(environ=env)
