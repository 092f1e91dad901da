"""The HTTP server's certificate: the configured one, or a trial one the gateway makes once for itself.

HTTPS is the default. With neither ``http.tls_cert_file`` nor ``http.plain`` set, a
trial CA and a server certificate signed by it are made in ``<data_dir>/tls/`` at
the first start and used from then on, so a fresh install answers over HTTPS at
once; every start logs where the CA is (clients trust it, ``curl --cacert``) and
that the certificate is a trial one. The CA's key is not kept: it can sign
nothing else, so trusting it trusts this one server certificate only. An expired
trial set is made again (with a new CA). The supervisor makes it before it starts
its workers, which only read it.
"""

from __future__ import annotations

import datetime
import logging
import socket
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from gateway.settings import Settings
from gateway.tls import ReloadableServerContext, TlsConfigError
from gateway.tls_certs import write_trial_set

log = logging.getLogger(__name__)


def trial_dir(settings: Settings) -> Path:
    return settings.data_path / "tls"


def certificate_files(settings: Settings) -> tuple[str, str] | None:
    """The certificate and key the HTTP server shows; None when it serves plain HTTP (``http.plain``)."""
    http = settings.http
    if http.plain:
        return None
    if http.tls_cert_file:
        return http.tls_cert_file, http.tls_key_file
    directory = trial_dir(settings)
    return str(directory / "server.pem"), str(directory / "server.key")


def _trial_hosts(settings: Settings) -> list[str]:
    hosts = ["localhost", "127.0.0.1", "::1"]
    names = [socket.gethostname(), socket.getfqdn(), urlsplit(settings.http.public_url).hostname or ""]
    if settings.http.host not in ("", "0.0.0.0", "::"):
        names.append(settings.http.host)
    return hosts + [n for n in dict.fromkeys(names) if n and n not in hosts]


def _usable(cert_file: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)


def prepare_certificate(settings: Settings) -> None:
    """Before the listeners start, once per gateway: make the trial set when it is the one to use and is missing
    or expired, and say in the log what the HTTP server will show."""
    if settings.http.plain:
        log.warning(
            "HTTP server serves plain HTTP (http.plain): only behind a TLS-terminating proxy or on an isolated bench"
        )
        return
    if settings.http.tls_cert_file:
        log.info("HTTPS with the certificate %s", settings.http.tls_cert_file)
        return
    directory = trial_dir(settings)
    ca_file = directory / "ca.pem"
    if not (_usable(directory / "server.pem") and ca_file.exists()):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        hosts = _trial_hosts(settings)
        write_trial_set(directory, hosts)
        (directory / "ca.key").unlink()  # the trial CA signs this one certificate and nothing else
        log.warning("made a trial CA and HTTPS certificate in %s for %s", directory, ", ".join(hosts))
    log.warning(
        "HTTPS with a TRIAL certificate (no http.tls_cert_file set): clients trust its CA %s, e.g. "
        "curl --cacert %s https://localhost:%d/health; for production set http.tls_cert_file and http.tls_key_file "
        "to a certificate from the hospital's CA, or http.plain behind a TLS-terminating proxy",
        ca_file, ca_file, settings.http.port,
    )  # fmt: skip


def listener_context(settings: Settings) -> ReloadableServerContext | None:
    """The HTTP listener's TLS context (None: plain HTTP); raises TlsConfigError on a missing, unreadable or
    unprotected certificate or key."""
    files = certificate_files(settings)
    if files is None:
        return None
    cert_file, key_file = files
    if not Path(cert_file).is_file():
        raise TlsConfigError(f"HTTPS certificate {cert_file}: no such file (http.tls_cert_file)")
    return ReloadableServerContext(cert_file, key_file, what="HTTPS")
