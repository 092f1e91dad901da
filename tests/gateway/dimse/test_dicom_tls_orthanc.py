"""Orthanc with DICOM TLS (DicomTlsEnabled) on either side of the gateway's DICOM TLS: as the SCU storing to and
querying the gateway's TLS port, and as the C-MOVE destination the gateway reaches over TLS as SCU."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import storescu
from tests.factory import ct_series, write_files
from tests.gateway.dimse.raw_peer import until
from tests.gateway.dimse.tls_peer import Pki, both_ways_certificate
from tests.peers.orthanc import run_orthanc
from tests.peers.ports import free_port


def _post(orthanc, path: str, body: object) -> object:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(orthanc.base_url + path, data=data, method="POST"), timeout=60) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory):
    """The gateway on a plain and a TLS port (client certificates required, Orthanc's bound to ORTHANC), and an
    Orthanc that speaks only DICOM TLS, each trusting the other's CA."""
    from tests.gateway_process import GatewayProcess

    tmp = tmp_path_factory.mktemp("tls-orthanc")
    pki = Pki.create(tmp / "pki")
    orthanc_cert = both_ways_certificate(pki.ca, tmp / "pki", "orthanc", "orthanc.lan")
    gateway_client = pki.ca.issue(tmp / "pki", "gateway-client", "pacsgw.lan", client=True)
    gateway = GatewayProcess(tmp / "gw", {})
    gateway.tls_port = free_port()  # type: ignore[attr-defined]
    config = {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(orthanc_cert.cert_file),
        "DicomTlsPrivateKey": str(orthanc_cert.key_file),
        "DicomTlsTrustedCertificates": str(pki.ca.cert_file),
        "DicomTlsRemoteCertificateRequired": True,
        "DicomModalities": {
            "PACSGW": {"AET": "PACSGW", "Host": "127.0.0.1", "Port": gateway.tls_port, "UseDicomTls": True}  # type: ignore[attr-defined]
        },
    }
    with run_orthanc(tmp / "orthanc", aet="ORTHANC", config=config) as orthanc:
        gateway.env.update(
            {
                "PACSGW_DICOM_TLS_PORT": str(gateway.tls_port),  # type: ignore[attr-defined]
                "PACSGW_DICOM_TLS_CERTIFICATE_FILE": str(pki.server.cert_file),
                "PACSGW_DICOM_TLS_PRIVATE_KEY_FILE": str(pki.server.key_file),
                "PACSGW_DICOM_TLS_CLIENT_CA_FILE": str(pki.ca.cert_file),
                "PACSGW_DICOM_TLS_REQUIRE_CLIENT_CERTIFICATE": "true",
                "PACSGW_DICOM_TLS_CLIENT_AETS": "orthanc.lan=ORTHANC,CT01=CT01",
                "PACSGW_DICOM_QUERY_AETS": "ORTHANC,CT01",
                "PACSGW_DICOM_MOVE_DESTINATIONS": f"ORTHANC=127.0.0.1:{orthanc.dicom_port}",
                "PACSGW_DICOM_TLS_DESTINATIONS": f"ORTHANC;ca={pki.ca.cert_file};cert={gateway_client.cert_file};"
                f"key={gateway_client.key_file};name=orthanc.lan",
            }
        )
        gateway.start()
        yield gateway, orthanc, pki
        gateway.kill()


def test_orthanc_stores_to_and_queries_the_gateway_over_tls(sites, tmp_path: Path) -> None:
    gateway, orthanc, _ = sites
    series = ct_series(3, size=32)
    ids = [_post(orthanc, "/instances", f.read_bytes())["ID"] for f in write_files(series, tmp_path / "files")]  # type: ignore[index]
    answer = _post(orthanc, "/modalities/PACSGW/store", {"Resources": ids, "Synchronous": True})
    assert answer["InstancesCount"] == 3 and not answer.get("FailedInstancesCount"), answer  # type: ignore[index]
    gateway.wait_idle()
    status, found = gateway.get(f"/dicom-web/studies/{series[0].StudyInstanceUID}/instances")
    assert status == 200 and len(found) == 3
    query = _post(orthanc, "/modalities/PACSGW/query",
                  {"Level": "Series", "Query": {"StudyInstanceUID": series[0].StudyInstanceUID, "SeriesInstanceUID": ""}})  # fmt: skip
    answers = orthanc.get_json(f"{query['Path']}/answers?expand")  # type: ignore[index]
    assert [a["0020,000e"]["Value"] for a in answers] == [series[0].SeriesInstanceUID]


def test_c_move_reaches_orthanc_over_tls(sites, tmp_path: Path) -> None:
    """Orthanc's DICOM port takes only TLS: the instances arrive there only if the gateway, as SCU, spoke it."""
    gateway, orthanc, _ = sites
    series = ct_series(2, size=32)
    assert storescu(gateway.dicom_port, write_files(series, tmp_path / "files")).returncode == 0  # the plain port
    gateway.wait_idle()
    # Orthanc pulls the study: its C-MOVE comes over TLS, the gateway's C-STOREs go back over TLS.
    _post(orthanc, "/modalities/PACSGW/move",
          {"Level": "Study", "Resources": [{"StudyInstanceUID": series[0].StudyInstanceUID}], "TargetAet": "ORTHANC"})  # fmt: skip
    wanted = {ds.SOPInstanceUID for ds in series}

    def arrived() -> set[str]:
        found = _post(orthanc, "/tools/find", {"Level": "Instance", "Query": {"StudyInstanceUID": series[0].StudyInstanceUID}, "Expand": True})
        return {i["MainDicomTags"]["SOPInstanceUID"] for i in found}  # type: ignore[union-attr]

    assert until(lambda: arrived() == wanted, 10), arrived()
