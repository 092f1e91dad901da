"""DICOM TLS as SCU (PS3.15 Annex B): how the gateway's outgoing associations reach the AEs listed in
``dicom_tls.destinations``. C-MOVE uses it; any other outgoing association (routing) asks it the same way."""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from gateway.settings_security import TlsDestination
from gateway.tls import client_context


class OutboundTls:
    """Client contexts by remote AE title, built once at start-up so that a missing or unprotected file stops the
    gateway there (``TlsConfigError``) rather than failing the first retrieve."""

    def __init__(self, destinations: Mapping[str, TlsDestination]) -> None:
        self.destinations = dict(destinations)
        self._contexts = {
            ae: client_context(ca_file=d.ca_file, cert_file=d.cert_file, key_file=d.key_file, what=f"DICOM TLS to {ae}")
            for ae, d in self.destinations.items()
        }

    def tls_args(self, ae_title: str, host: str) -> tuple[ssl.SSLContext, str] | None:
        """pynetdicom's ``tls_args`` (context, name to check the certificate for) for ``ae_title``; None: plain."""
        destination = self.destinations.get(ae_title)
        if destination is None:
            return None
        return self._contexts[ae_title], destination.server_name or host
