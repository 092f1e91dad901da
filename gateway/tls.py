"""TLS contexts for every listener and outgoing connection of the gateway.

One profile everywhere: TLS 1.2 or newer, with the cipher suites of BCP 195
(RFC 9325, section 4.2), which is the non-downgrading profile of DICOM PS3.15
Annex B.9. TLS 1.3 suites are OpenSSL's, all of which BCP 195 accepts.
"""

from __future__ import annotations

import logging
import os
import ssl
import stat
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# RFC 9325 section 4.2 (TLS 1.2): ECDHE key exchange with AEAD ciphers only, ECDSA or RSA certificates.
BCP195_TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


class TlsConfigError(ValueError):
    """A certificate, key or CA bundle is missing, unreadable, unprotected or does not fit the profile."""


def _profile(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def check_private_file(path: str | Path, what: str) -> None:
    """Refuse a key or secret file that another user (its group or anyone) may read, as ssh does."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise TlsConfigError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    if mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
        raise TlsConfigError(
            f"{what} {path} may be read or changed by other users (mode {stat.S_IMODE(mode):04o}); "
            f"allow its owner only: chmod 600 {path}"
        )


def _load_chain(context: ssl.SSLContext, cert_file: str, key_file: str, what: str) -> None:
    check_private_file(key_file, f"{what} private key")
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"{what} certificate {cert_file} with key {key_file}: {exc}") from None


def _load_ca(context: ssl.SSLContext, ca_file: str, what: str) -> None:
    try:
        context.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"{what} CA bundle {ca_file}: {exc}") from None


def server_context(
    cert_file: str, key_file: str, *, client_ca_file: str = "", require_client_cert: bool = False, what: str = "server"
) -> ssl.SSLContext:
    """A listener's context; with ``client_ca_file`` clients may (or, ``require_client_cert``, must) show a certificate."""
    if not cert_file or not key_file:
        raise TlsConfigError(f"{what}: TLS needs a certificate file and a key file")
    context = _profile(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    _load_chain(context, cert_file, key_file, what)
    if client_ca_file:
        _load_ca(context, client_ca_file, what)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise TlsConfigError(f"{what}: requiring client certificates needs a CA bundle to check them against")
    return context


def client_context(
    *, ca_file: str = "", cert_file: str = "", key_file: str = "", what: str = "client"
) -> ssl.SSLContext:
    """An outgoing connection's context: the server's certificate checked (against ``ca_file``, else the system's)
    and its host name matched; ``cert_file`` and ``key_file`` to show a client certificate."""
    context = _profile(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    if ca_file:
        _load_ca(context, ca_file, what)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert_file or key_file:
        if not (cert_file and key_file):
            raise TlsConfigError(f"{what}: a client certificate needs both its certificate file and its key file")
        _load_chain(context, cert_file, key_file, what)
    return context


class ReloadableServerContext:
    """A listener's context whose certificate and key are read again on ``reload`` (SIGHUP).

    The same ``SSLContext`` object is kept, so the listening sockets stay open
    and connections under way go on with what they negotiated; handshakes after
    the reload show the new certificate. A reload that fails keeps the old one.
    """

    def __init__(
        self, cert_file: str, key_file: str, *, client_ca_file: str = "", require_client_cert: bool = False,
        what: str = "server",
    ) -> None:  # fmt: skip
        self.cert_file, self.key_file, self.what = cert_file, key_file, what
        self.client_ca_file = client_ca_file
        self.context = server_context(
            cert_file, key_file, client_ca_file=client_ca_file, require_client_cert=require_client_cert, what=what
        )

    def reload(self) -> bool:
        """Load the files again; False (and the old certificate kept) when they cannot be used."""
        try:
            server_context(self.cert_file, self.key_file, client_ca_file=self.client_ca_file, what=self.what)
            _load_chain(self.context, self.cert_file, self.key_file, self.what)
            if self.client_ca_file:
                _load_ca(self.context, self.client_ca_file, self.what)
        except TlsConfigError as exc:
            log.error("%s: TLS certificate not reloaded, the previous one stays in use: %s", self.what, exc)
            return False
        log.info("%s: TLS certificate reloaded from %s", self.what, self.cert_file)
        return True


def peer_names(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> list[str]:
    """The names a verified peer certificate carries: its subject CN, then its DNS subjectAltNames."""
    if ssl_object is None:
        return []
    cert: dict[str, Any] = ssl_object.getpeercert() or {}
    names: list[str] = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    names += [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS" and value not in names]
    return names
