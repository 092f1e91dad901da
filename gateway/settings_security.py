"""The settings sections of the gateway's security: DICOM TLS, single sign-on, two-factor login, audit off the box.

``gateway.settings`` reads them with the others; TLS options of the HTTP server, the HL7 link, FHIR and S3
sit in those sections (``gateway.settings_sections``).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.settings_sections import opt


# ------------------------------------------------------------------ DICOM TLS (the SCP's TLS port, TLS as SCU)


@dataclass
class DicomTlsSettings:
    port: int = opt(
        0, "TCP port of the DICOM TLS SCP (conventionally 2762), beside `dicom.port` or instead of it; 0 turns it off."
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
        "",
        "Host of the audit record repository (a syslog collector taking RFC 5425 TLS); its certificate must name it. "
        "Empty: audit in the index only. Set: every audit event is also spooled under the data directory "
        "(`audit-spool/`) and sent as a DICOM Audit Message (PS3.15 A.5) in RFC 5424 syslog over TLS.",
    )
    syslog_port: int = opt(6514, "TCP port of the audit record repository (6514 is syslog over TLS, RFC 5425).")
    ca_file: str = opt(
        "", "CA bundle (PEM) the repository's certificate is checked against; empty: the system's CA certificates."
    )
    cert_file: str = opt("", "Client certificate (PEM) the gateway shows the repository (with `audit.key_file`); empty: none.")
    key_file: str = opt("", "Private key (PEM) of `audit.cert_file`; readable by its owner only.")
    source_id: str = opt(
        "", "AuditSourceID of the gateway's messages, its name in the repository; empty: the machine's host name."
    )
    enterprise_site_id: str = opt("", "AuditEnterpriseSiteID of the gateway's messages (the hospital); empty: none.")
    confirm_seconds: float = opt(
        0.2,
        "After the repository's TCP acknowledged a batch, how long the connection must stay up (or close without a "
        "reset) before the batch counts as delivered and leaves the spool; also how long a new connection must stand "
        "before anything is sent on it (a repository refusing the client certificate closes it in that time).",
    )
    retry_max_seconds: float = opt(10.0, "Longest wait between two attempts to reach the repository (it doubles from 0.5 s).")
