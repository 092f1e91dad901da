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
        "Addresses or CIDR networks inside the hospital (e.g. `10.0.0.0/8`): a local account's login from anywhere "
        "else needs its TOTP code too; administrators need one from everywhere. The address is the client's as the "
        "audit trail records it (X-Forwarded-For only from `network.trusted_proxies`). Empty: every network counts "
        "as outside.",
    )
    totp_issuer: str = opt(
        "PACS gateway",
        "The issuer an authenticator app shows beside the account name (the otpauth:// URI of enrolment); "
        "name the hospital and the gateway, no patient data.",
    )


# ------------------------------------------------------------------ audit off the box (IHE ATNA, syslog over TLS)


@dataclass
class AuditSettings:
    syslog_host: str = opt(
        "", "Host of the audit record repository (a syslog collector taking RFC 5425 TLS); empty: audit in the index only."
    )
