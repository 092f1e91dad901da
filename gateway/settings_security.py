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
