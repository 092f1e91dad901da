"""sslyze against a TLS port of the gateway: what it offers, as a reviewer's scanner sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from sslyze import (
    CertificateInfoExtraArgument,
    ClientAuthenticationCredentials,
    Scanner,
    ScanCommand,
    ScanCommandAttemptStatusEnum,
    ScanCommandsExtraArguments,
    ServerNetworkConfiguration,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanStatusEnum,
)

_PROTOCOLS = {
    "SSL 2.0": ScanCommand.SSL_2_0_CIPHER_SUITES,
    "SSL 3.0": ScanCommand.SSL_3_0_CIPHER_SUITES,
    "TLS 1.0": ScanCommand.TLS_1_0_CIPHER_SUITES,
    "TLS 1.1": ScanCommand.TLS_1_1_CIPHER_SUITES,
    "TLS 1.2": ScanCommand.TLS_1_2_CIPHER_SUITES,
    "TLS 1.3": ScanCommand.TLS_1_3_CIPHER_SUITES,
}
# What RFC 9325 (BCP 195) accepts for TLS 1.2: forward secrecy and AEAD.
_STRONG_TLS12 = ("TLS_ECDHE_", "TLS_DHE_")
_AEAD = ("_GCM_", "_CHACHA20_POLY1305")


@dataclass
class TlsScan:
    """What sslyze found on one port."""

    suites: dict[str, list[str]] = field(default_factory=dict)  # protocol -> accepted cipher suites (IANA names)
    chain_valid: bool = False
    hostname_matches: bool = False
    validation_error: str = ""

    @property
    def protocols(self) -> list[str]:
        return [name for name, suites in self.suites.items() if suites]

    def weak_suites(self) -> list[str]:
        """Accepted suites BCP 195 does not allow (below TLS 1.2, or TLS 1.2 without ECDHE/DHE and AEAD)."""
        weak = [s for p, suites in self.suites.items() if p not in ("TLS 1.2", "TLS 1.3") for s in suites]
        weak += [
            s for s in self.suites.get("TLS 1.2", [])
            if not (s.startswith(_STRONG_TLS12) and any(a in s for a in _AEAD))
        ]  # fmt: skip
        return weak

    def assert_bcp195(self) -> None:
        assert self.protocols and set(self.protocols) <= {"TLS 1.2", "TLS 1.3"}, self.suites
        assert not self.weak_suites(), self.weak_suites()
        assert self.chain_valid, self.validation_error
        assert self.hostname_matches


def scan(
    port: int, *, ca_file: Path, host: str = "127.0.0.1", server_name: str = "localhost",
    client_cert: Path | None = None, client_key: Path | None = None,
) -> TlsScan:  # fmt: skip
    """Scan ``host:port``; ``ca_file`` is the CA the chain must lead to, ``client_cert`` for a port that asks for one."""
    credentials = (
        ClientAuthenticationCredentials(certificate_chain_path=client_cert, key_path=client_key)
        if client_cert and client_key
        else None
    )
    request = ServerScanRequest(
        server_location=ServerNetworkLocation(hostname=server_name, port=port, ip_address=host),
        network_configuration=ServerNetworkConfiguration(
            tls_server_name_indication=server_name, tls_client_auth_credentials=credentials
        ),
        scan_commands={ScanCommand.CERTIFICATE_INFO, *_PROTOCOLS.values()},
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=ca_file)
        ),
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    [result] = list(scanner.get_results())
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    assert result.scan_result is not None
    out = TlsScan()
    for name, command in _PROTOCOLS.items():
        attempt = getattr(result.scan_result, command.value)
        assert attempt.status == ScanCommandAttemptStatusEnum.COMPLETED, (name, attempt.error_trace)
        out.suites[name] = [s.cipher_suite.name for s in attempt.result.accepted_cipher_suites]
    info = result.scan_result.certificate_info
    assert info.status == ScanCommandAttemptStatusEnum.COMPLETED, info.error_trace
    deployment = info.result.certificate_deployments[0]
    custom = [r for r in deployment.path_validation_results if r.trust_store.path == ca_file]
    out.chain_valid = bool(custom) and custom[0].was_validation_successful
    out.validation_error = str(custom[0].validation_error) if custom else "the CA file was not used"
    out.hostname_matches = server_name in _leaf_names(deployment.received_certificate_chain[0])
    return out


def _leaf_names(leaf: x509.Certificate) -> list[str]:
    try:
        alt = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*alt.get_values_for_type(x509.DNSName), *(str(a) for a in alt.get_values_for_type(x509.IPAddress))]
