"""The settings sections of the gateway's security: DICOM TLS, single sign-on, two-factor login, audit off the box.

``gateway.settings`` reads them with the others; TLS options of the HTTP server, the HL7 link, FHIR and S3
sit in those sections (``gateway.settings_sections``).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.settings_sections import SettingsError, opt


# ------------------------------------------------------------------ DICOM TLS (the SCP's TLS port, TLS as SCU)


@dataclass
class DicomTlsSettings:
    port: int = opt(
        0, "TCP port of the DICOM TLS SCP (conventionally 2762), beside `dicom.port` or instead of it; 0 turns it off."
    )


# ------------------------------------------------------------------ single sign-on (OpenID Connect)


@dataclass
class OidcSettings:
    """The hospital's OpenID Connect provider: its access tokens as bearer tokens, and the viewer's sign-in
    (gateway.http.oidc_tokens, gateway.http.oidc_login)."""

    issuer: str = opt(
        "", "Issuer URL of the hospital's OpenID Connect provider (e.g. Keycloak's realm URL); empty: no single sign-on."
    )
    audience: str = opt(
        "",
        "The `aud` an access token must name to be taken as a bearer token (e.g. the gateway's client ID in the "
        "provider); empty: `oidc.client_id`.",
    )
    client_id: str = opt("", "The gateway's client ID at the provider, for the viewer's sign-in (and the ID token's `aud`).")
    client_secret: str = opt(
        "", "The gateway's client secret at the provider (a confidential client); empty: a public client (PKCE only).",
        secret=True,
    )
    scopes: list[str] = opt(["openid", "profile"], "Scopes the viewer's sign-in asks for (`openid` is always asked).")
    redirect_uri: str = opt(
        "",
        "The sign-in's callback as the browser reaches it (`https://HOST/auth/oidc/callback`), registered at the "
        "provider; empty: made from the request's own scheme and host.",
    )
    username_claim: str = opt(
        "preferred_username", "Claim naming the user in the audit trail and on signed reports (falls back to `sub`)."
    )
    display_name_claim: str = opt("name", "Claim with the user's full name.")
    roles_claim: str = opt(
        "realm_access.roles",
        "Claim holding the user's roles at the provider, a dotted path into the token (Keycloak: `realm_access.roles`, "
        "or `resource_access.CLIENT.roles`); a list of strings or one string.",
    )
    role_map: list[str] = opt(
        [],
        "Provider roles to the gateway's roles, as PROVIDER_ROLE=GATEWAY_ROLE (admin, radiologist, referring, auditor), "
        "e.g. `pacs-reader=radiologist`. A token none of whose roles is mapped is refused (403); with several, the most "
        "powerful wins (admin, radiologist, auditor, referring).",
    )
    patients_claim: str = opt(
        "patients",
        "Claim (dotted path) listing the patient IDs a referring physician may see, kept as the user's patient links; "
        "empty: links are managed locally (`pacs-gateway user link`).",
    )
    leeway_seconds: float = opt(30.0, "Clock skew allowed when checking a token's `exp`, `nbf` and `iat`.")
    jwks_cache_seconds: float = opt(
        3600.0, "Seconds the provider's keys (JWKS) are used before they are fetched again; an unknown key fetches at once."
    )
    jwks_min_refetch_seconds: float = opt(
        10.0,
        "Least seconds between two fetches of the keys caused by tokens naming an unknown key, so that a flood of "
        "forged tokens cannot hammer the provider.",
    )
    ca_file: str = opt(
        "", "CA bundle (PEM) to trust for the provider's HTTPS certificate; empty: the system's trusted CAs."
    )
    timeout_seconds: float = opt(5.0, "Seconds to wait for the provider (discovery, keys, code exchange).")

    def validate(self) -> None:
        """Raises SettingsError when single sign-on is configured but cannot work as set."""
        if not self.issuer:
            return
        if not self.issuer.startswith(("https://", "http://")):
            raise SettingsError("oidc.issuer must be an https:// (or, on a test bench, http://) URL")
        if not (self.audience or self.client_id):
            raise SettingsError("oidc.audience or oidc.client_id must be set: a token's aud is checked against it")
        if self.leeway_seconds < 0 or self.jwks_cache_seconds < 0 or self.jwks_min_refetch_seconds < 0:
            raise SettingsError("oidc.leeway_seconds, oidc.jwks_cache_seconds and oidc.jwks_min_refetch_seconds must not be negative")
        if not self.timeout_seconds > 0:
            raise SettingsError("oidc.timeout_seconds must be positive")
        self.role_table()

    def role_table(self) -> dict[str, str]:
        """``role_map`` as provider role -> gateway role; raises SettingsError on a malformed entry."""
        gateway_roles = ("admin", "radiologist", "referring", "auditor")
        out = {}
        for entry in self.role_map:
            theirs, sep, ours = entry.rpartition("=")
            if not sep or not theirs.strip() or ours.strip() not in gateway_roles:
                raise SettingsError(f"oidc.role_map: {entry!r} is not PROVIDER_ROLE=ROLE with ROLE one of {', '.join(gateway_roles)}")
            out[theirs.strip()] = ours.strip()
        return out


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
