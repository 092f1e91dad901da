"""The DICOM TLS mode of ``bench/ingest.py`` (``--tls``): certificates, each side's TLS settings, the ratios.

With ``--tls`` every association count P also runs the gateway on its DICOM TLS port only (plain port off,
client certificate required and bound to the sender's AE title) and Orthanc with ``DicomTlsEnabled`` (client
certificate required), both fed by ``storescu +tls`` with the same client certificate, in the same run as the
plain runs. Reported: gateway TLS / gateway plain (target >= 0.8x), Orthanc TLS / Orthanc plain, and gateway
TLS / Orthanc TLS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Protocol

from tests.gateway.dimse.tls_peer import Pki, both_ways_certificate, tls_options
from tests.peers.ports import free_port

TARGET_TLS_RATIO = 0.8  # product issue 13: ingest over DICOM TLS at least 0.8x plain, same run
SCU_AET = "BENCHSCU"


class _Run(Protocol):
    target: str
    associations: int

    @property
    def ack_rate(self) -> float: ...

    @property
    def e2e_rate(self) -> float: ...


@dataclass
class TlsSetup:
    """A trial CA, the gateway's and Orthanc's certificates, and the sender's client certificate."""

    pki: Pki
    orthanc_cert_file: Path
    orthanc_key_file: Path
    client_cert_file: Path
    client_key_file: Path

    @classmethod
    def create(cls, directory: Path) -> TlsSetup:
        pki = Pki.create(directory)
        orthanc = both_ways_certificate(pki.ca, directory, "orthanc", "orthanc.lan")
        client = pki.ca.issue(directory, "benchscu", SCU_AET, client=True)
        return cls(pki, orthanc.cert_file, orthanc.key_file, client.cert_file, client.key_file)

    def gateway_env(self, tls_port: int) -> dict[str, str]:
        return {
            "PACSGW_DICOM_TLS_PORT": str(tls_port),
            "PACSGW_DICOM_TLS_PLAIN": "false",
            "PACSGW_DICOM_TLS_CERTIFICATE_FILE": str(self.pki.server.cert_file),
            "PACSGW_DICOM_TLS_PRIVATE_KEY_FILE": str(self.pki.server.key_file),
            "PACSGW_DICOM_TLS_CLIENT_CA_FILE": str(self.pki.ca.cert_file),
            "PACSGW_DICOM_TLS_REQUIRE_CLIENT_CERTIFICATE": "true",
            "PACSGW_DICOM_TLS_CLIENT_AETS": f"{SCU_AET}={SCU_AET}",
        }

    def orthanc_config(self) -> dict[str, Any]:
        return {
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(self.orthanc_cert_file),
            "DicomTlsPrivateKey": str(self.orthanc_key_file),
            "DicomTlsTrustedCertificates": str(self.pki.ca.cert_file),
            "DicomTlsRemoteCertificateRequired": True,
        }

    def scu_options(self) -> tuple[str, ...]:
        """``storescu`` options: TLS with the client certificate, the server's checked against the CA."""
        from gateway.tls_certs import IssuedCertificate

        return tuple(tls_options(self.pki, IssuedCertificate(self.client_cert_file, self.client_key_file)))

    @staticmethod
    def port() -> int:
        return free_port()


def report_tls(runs: Sequence[_Run]) -> list[dict[str, Any]]:
    """Print and return the TLS ratios, per association count, of the runs of one benchmark."""
    by = {(r.target, r.associations): r for r in runs}
    ratios: list[dict[str, Any]] = []
    print(f"\nDICOM TLS  assoc  gateway TLS/plain ack, e2e (target >= {TARGET_TLS_RATIO}x)   Orthanc TLS/plain ack"
          "   gateway TLS/Orthanc TLS ack, e2e")
    for p in sorted({a for t, a in by if t == "gateway-tls"}):
        gw, gw_tls = by[("gateway", p)], by[("gateway-tls", p)]
        row: dict[str, Any] = {"associations": p, "tls_ack_ratio": gw_tls.ack_rate / gw.ack_rate,
                               "tls_e2e_ratio": gw_tls.e2e_rate / gw.e2e_rate}  # fmt: skip
        row["tls_pass"] = row["tls_ack_ratio"] >= TARGET_TLS_RATIO and row["tls_e2e_ratio"] >= TARGET_TLS_RATIO
        line = (f"{'':<10} {p:>5}  {row['tls_ack_ratio']:5.2f}x, {row['tls_e2e_ratio']:5.2f}x "
                f"{'PASS' if row['tls_pass'] else 'MISS'}")  # fmt: skip
        orth, orth_tls = by.get(("orthanc", p)), by.get(("orthanc-tls", p))
        if orth and orth_tls:
            row["orthanc_tls_ack_ratio"] = orth_tls.ack_rate / orth.ack_rate
            row["gateway_tls_vs_orthanc_tls_ack"] = gw_tls.ack_rate / orth_tls.ack_rate
            row["gateway_tls_vs_orthanc_tls_e2e"] = gw_tls.e2e_rate / orth_tls.e2e_rate
            line += (f"{'':<21}{row['orthanc_tls_ack_ratio']:5.2f}x{'':<19}"
                     f"{row['gateway_tls_vs_orthanc_tls_ack']:5.2f}x, {row['gateway_tls_vs_orthanc_tls_e2e']:5.2f}x")  # fmt: skip
        print(line)
        ratios.append(row)
    return ratios
