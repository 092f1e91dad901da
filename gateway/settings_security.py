"""The settings sections of the gateway's security: DICOM TLS, single sign-on, two-factor login, audit off the box.

``gateway.settings`` reads them with the others; TLS options of the HTTP server, the HL7 link, FHIR and S3
sit in those sections (``gateway.settings_sections``).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.settings_sections import SettingsError, opt


# ------------------------------------------------------------------ DICOM TLS (the SCP's TLS port, TLS as SCU)


@dataclass(frozen=True)
class TlsDestination:
    """How the gateway reaches one remote AE over DICOM TLS as SCU: the CA bundle its certificate is checked
    against (empty: the system's), the client certificate the gateway shows (optional), and the name its
    certificate must carry (empty: the host the association goes to)."""

    ae_title: str
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""


_DESTINATION_KEYS = {"ca": "ca_file", "cert": "cert_file", "key": "key_file", "name": "server_name"}


def parse_tls_destination(entry: str, where: str) -> TlsDestination:
    """One ``AE[;ca=PATH][;cert=PATH;key=PATH][;name=HOST]`` entry; a SettingsError naming it when malformed."""
    ae, *fields = (part.strip() for part in entry.split(";"))
    if not 1 <= len(ae) <= 16 or "=" in ae or "\\" in ae:
        raise SettingsError(f"{where}: {entry!r} does not start with an AE title (1 to 16 characters)")
    values: dict[str, str] = {}
    for part in fields:
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in _DESTINATION_KEYS or not value.strip():
            raise SettingsError(
                f"{where}: {entry!r}: {part!r} is not one of ca=PATH, cert=PATH, key=PATH, name=HOST"
            )
        if _DESTINATION_KEYS[key] in values:
            raise SettingsError(f"{where}: {entry!r} gives {key}= twice")
        values[_DESTINATION_KEYS[key]] = value.strip()
    if bool(values.get("cert_file")) != bool(values.get("key_file")):
        raise SettingsError(f"{where}: {entry!r}: a client certificate needs both cert= and key=")
    return TlsDestination(ae, **values)


@dataclass
class DicomTlsSettings:
    port: int = opt(
        0, "TCP port of the DICOM TLS SCP (conventionally 2762), beside `dicom.port` or instead of it; 0 turns it off."
    )
    plain: bool = opt(
        True,
        "Also listen on `dicom.port` without TLS. False (with `dicom_tls.port` set): DICOM only over TLS, the plain "
        "port is not opened.",
    )
    certificate_file: str = opt("", "PEM certificate (with its chain) the DICOM TLS SCP shows; read again on SIGHUP.")
    private_key_file: str = opt(
        "", "PEM private key of `dicom_tls.certificate_file`; refused unless only its owner may read it (chmod 600)."
    )
    client_ca_file: str = opt(
        "",
        "PEM CA bundle that client certificates are checked against. Empty: clients are not asked for a certificate.",
    )
    require_client_certificate: bool = opt(
        False,
        "Refuse a TLS handshake without a valid client certificate (needs `dicom_tls.client_ca_file`).",
    )
    client_aets: list[str] = opt(
        [],
        "Mutual TLS bound to AE titles, as NAME=AE entries (one per pair, a NAME may repeat): a client certificate "
        "whose subject CN or a DNS subjectAltName is NAME may call as AE. When set, every association on the TLS port "
        "must come with a certificate whose NAME lists its calling AE title; any other (no certificate, a certificate "
        "not listed, another AE title) is answered A-ASSOCIATE-RJ 'calling AE title not recognized' and audited. "
        "Empty: any valid certificate may use any calling AE title `dicom.allowed_calling_aets` allows.",
    )
    destinations: list[str] = opt(
        [],
        "Remote AEs the gateway reaches over DICOM TLS as SCU (C-MOVE destinations), one entry each: "
        "`AE[;ca=PATH][;cert=PATH;key=PATH][;name=HOST]`. `ca`: CA bundle to check its certificate (default: the "
        "system's); `cert`/`key`: the client certificate the gateway shows; `name`: the name its certificate carries "
        "(default: the host it is reached at). An AE not listed is reached without TLS.",
    )

    @property
    def enabled(self) -> bool:
        return self.port != 0

    def ae_binding(self) -> dict[str, frozenset[str]]:
        """``client_aets`` as certificate name -> the calling AE titles it may use."""
        out: dict[str, set[str]] = {}
        for entry in self.client_aets:
            name, sep, ae = entry.partition("=")
            if not sep or not name.strip() or not 1 <= len(ae.strip()) <= 16:
                raise SettingsError(
                    f"dicom_tls.client_aets: {entry!r} is not NAME=AE (a certificate name, an AE title of 1 to 16 "
                    "characters)"
                )
            out.setdefault(name.strip().lower(), set()).add(ae.strip())
        return {name: frozenset(aets) for name, aets in out.items()}

    def tls_destinations(self) -> dict[str, TlsDestination]:
        """``destinations`` as AE title -> how to reach it over TLS."""
        out: dict[str, TlsDestination] = {}
        for entry in self.destinations:
            destination = parse_tls_destination(entry, "dicom_tls.destinations")
            if destination.ae_title in out:
                raise SettingsError(f"dicom_tls.destinations: {destination.ae_title} is listed twice")
            out[destination.ae_title] = destination
        return out

    def validate(self, dicom_port: int) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"dicom_tls.port must be a TCP port or 0, got {self.port}")
        self.ae_binding()
        self.tls_destinations()
        if not self.plain and not self.enabled:
            raise SettingsError("dicom_tls.plain is false but dicom_tls.port is 0: the gateway would receive no DICOM")
        if not self.enabled:
            return
        if self.plain and self.port == dicom_port:
            raise SettingsError("dicom_tls.port must differ from dicom.port")
        if not self.certificate_file or not self.private_key_file:
            raise SettingsError("dicom_tls.port is set: dicom_tls.certificate_file and private_key_file are needed")
        if (self.require_client_certificate or self.client_aets) and not self.client_ca_file:
            raise SettingsError(
                "dicom_tls.require_client_certificate and dicom_tls.client_aets need dicom_tls.client_ca_file"
            )


# ------------------------------------------------------------------ single sign-on (OpenID Connect)


@dataclass
class OidcSettings:
    issuer: str = opt(
        "", "Issuer URL of the hospital's OpenID Connect provider (e.g. Keycloak's realm URL); empty: no single sign-on."
    )


# ------------------------------------------------------------------ local accounts' login (two factors)


@dataclass
class LoginSettings:
    trusted_networks: list[str] = opt(
        [],
        "Addresses or CIDR networks inside the hospital: a local account's login from anywhere else needs its TOTP "
        "code too. Empty: every network counts as outside.",
    )


# ------------------------------------------------------------------ audit off the box (IHE ATNA, syslog over TLS)


@dataclass
class AuditSettings:
    syslog_host: str = opt(
        "", "Host of the audit record repository (a syslog collector taking RFC 5425 TLS); empty: audit in the index only."
    )
