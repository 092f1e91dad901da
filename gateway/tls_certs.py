"""Trial certificates: a private CA, and server and client certificates it signs (``pacs-gateway tls self-signed``).

For a trial or a test bench only; a hospital's own CA (or its PKI) issues
the certificates the gateway runs with. Keys are ECDSA P-256, certificates
SHA-256, valid for a year, and key files are written readable by their owner only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID_DAYS = 365


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate and its key, as written: PEM files side by side."""

    cert_file: Path
    key_file: Path


@dataclass
class TrialCa:
    """A CA made for a trial; ``issue`` signs server and client certificates with it."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_file: Path

    @classmethod
    def create(cls, directory: Path, name: str = "PACS gateway trial CA") -> TrialCa:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
                ),  # fmt: skip
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_key(directory / "ca.key", key)
        cert_file = directory / "ca.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(cert, key, cert_file)

    def issue(
        self, directory: Path, stem: str, common_name: str, *, hosts: list[str] = (), client: bool = False,  # type: ignore[assignment]
        server_too: bool = False,
    ) -> IssuedCertificate:
        """Write ``<stem>.pem`` and ``<stem>.key``: a server certificate for ``hosts`` (DNS names or addresses),
        or with ``client`` one a client shows (its common name, e.g. a modality's AE title, names it); with
        ``server_too`` as well, one for both (a peer such as Orthanc that shows one certificate either way)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
                    + ([ExtendedKeyUsageOID.SERVER_AUTH] if server_too or not client else [])
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        names: list[x509.GeneralName] = []
        for host in hosts or ([] if client and not server_too else [common_name]):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        directory.mkdir(parents=True, exist_ok=True)
        key_file = directory / f"{stem}.key"
        _write_key(key_file, key)
        cert_file = directory / f"{stem}.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return IssuedCertificate(cert_file, key_file)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def write_trial_set(directory: Path, hosts: list[str]) -> tuple[TrialCa, IssuedCertificate]:
    """A CA (``ca.pem``, ``ca.key``) and a server certificate for ``hosts`` (``server.pem``, ``server.key``)."""
    ca = TrialCa.create(directory)
    return ca, ca.issue(directory, "server", hosts[0], hosts=hosts)
