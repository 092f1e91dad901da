"""The gateway's one typed settings object.

Read once at start-up from, in rising order of precedence: built-in defaults,
a TOML file (``--config``), ``PACSGW_<SECTION>_<OPTION>`` environment
variables, and command-line flags.  Every option carries its documentation in
its field metadata; ``pacs-gateway config --reference`` prints the reference
that the README shows.
"""

from __future__ import annotations

import codecs
import dataclasses
import ipaddress
import os
import socket
import tomllib
import typing
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway.tls import TlsConfigError, check_private_file

ENV_PREFIX = "PACSGW_"


from gateway.settings_sections import (  # noqa: F401 - re-exported: the settings API is gateway.settings
    SettingsError,
    DicomSettings,
    HttpSettings,
    StorageSettings,
    S3Settings,
    IndexSettings,
    SpoolSettings,
    IngestSettings,
    DeidSettings,
    FhirSettings,
    Hl7Settings,
    NetworkSettings,
    ServeSettings,
    ClusterSettings,
    opt,
)
from gateway.settings_security import AuditSettings, DicomTlsSettings, LoginSettings, OidcSettings  # noqa: F401


@dataclass
class Settings:
    data_dir: str = opt("./data", "Directory for the spool, the SQLite index and the local object store.")
    log_level: str = opt("INFO", "Log level: DEBUG, INFO, WARNING or ERROR.")
    dicom: DicomSettings = field(default_factory=DicomSettings)
    dicom_tls: DicomTlsSettings = field(default_factory=DicomTlsSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    s3: S3Settings = field(default_factory=S3Settings)
    index: IndexSettings = field(default_factory=IndexSettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    deid: DeidSettings = field(default_factory=DeidSettings)
    fhir: FhirSettings = field(default_factory=FhirSettings)
    hl7: Hl7Settings = field(default_factory=Hl7Settings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    oidc: OidcSettings = field(default_factory=OidcSettings)
    login: LoginSettings = field(default_factory=LoginSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def spool_path(self) -> Path:
        return self.data_path / "spool"

    @property
    def local_objects_path(self) -> Path:
        return Path(self.storage.local_path) if self.storage.local_path else self.data_path / "objects"

    @property
    def quarantine_path(self) -> Path:
        return self.data_path / "quarantine"

    def deid_secret(self) -> bytes | None:
        """The de-identification secret, from the setting or its file; None when neither is set."""
        text = self.deid.secret
        if not text and self.deid.secret_file:
            try:
                check_private_file(self.deid.secret_file, "deid.secret_file")
            except TlsConfigError as exc:
                raise SettingsError(str(exc)) from None
            try:
                lines = Path(self.deid.secret_file).read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise SettingsError(f"deid.secret_file: cannot read it ({exc.strerror or exc})") from None
            text = lines[0].strip() if lines else ""
        if not text:
            return None
        if len(text.encode("utf-8")) < 32:
            raise SettingsError("deid.secret must be at least 32 characters")
        return text.encode("utf-8")

    @property
    def node_name(self) -> str:
        """This node's name in the cluster: ``cluster.node_name``, else the host name."""
        return self.cluster.node_name or socket.gethostname()

    @property
    def index_url(self) -> str:
        return self.index.url or f"sqlite:///{(self.data_path / 'index.sqlite').resolve()}"


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(Settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings) if dataclasses.is_dataclass(hints[f.name])}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise SettingsError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin is list:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise SettingsError(f"{where}: expected a list of strings")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return value.lower() in {"1", "true", "yes", "on"}
        raise SettingsError(f"{where}: expected true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise SettingsError(f"{where}: expected a number, got {value!r}")
        try:
            return annotation(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{where}: expected {annotation.__name__}, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, str):
            raise SettingsError(f"{where}: expected a string, got {value!r}")
        return value
    raise SettingsError(f"{where}: unsupported option type {annotation!r}")


def _apply(target: Any, values: Mapping[str, Any], where: str) -> None:
    hints = typing.get_type_hints(type(target))
    known = {f.name for f in dataclasses.fields(target)}
    for key, value in values.items():
        if key not in known:
            raise SettingsError(f"{where}: unknown option {key!r}")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, Mapping):
                raise SettingsError(f"{where}.{key}: expected a table")
            _apply(getattr(target, key), value, f"{where}.{key}")
        else:
            setattr(target, key, _coerce(value, annotation, f"{where}.{key}"))


def env_name(section: str | None, option: str) -> str:
    return ENV_PREFIX + (f"{section}_{option}" if section else option).upper()


def _apply_environment(settings: Settings, environ: Mapping[str, str]) -> None:
    """Apply ``PACSGW_*`` variables one by one, so that an error names the variable."""
    sections = _sections()
    top_hints = typing.get_type_hints(Settings)
    for f in dataclasses.fields(Settings):
        if f.name in sections:
            section, hints = getattr(settings, f.name), typing.get_type_hints(sections[f.name])
            for sub in dataclasses.fields(sections[f.name]):
                name = env_name(f.name, sub.name)
                if name in environ:
                    setattr(section, sub.name, _coerce(environ[name], hints[sub.name], name))
        elif (name := env_name(None, f.name)) in environ:
            setattr(settings, f.name, _coerce(environ[name], top_hints[f.name], name))


def load_settings(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from defaults, a TOML file, the environment and explicit overrides."""
    settings = Settings()
    if config_file is not None:
        path = Path(config_file)
        try:
            with path.open("rb") as fh:
                document = tomllib.load(fh)
        except OSError as exc:
            raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: {exc}") from None
        _apply(settings, document, str(path))
    _apply_environment(settings, os.environ if environ is None else environ)
    if overrides:
        _apply(settings, overrides, "command line")
    _validate(settings)
    return settings


def _validate(settings: Settings) -> None:
    if not 1 <= len(settings.dicom.ae_title.strip()) <= 16:
        raise SettingsError("dicom.ae_title must be 1 to 16 characters")
    for name, port in (("dicom.port", settings.dicom.port), ("http.port", settings.http.port)):
        if not 0 <= port <= 65535:
            raise SettingsError(f"{name} must be a TCP port, got {port}")
    if settings.storage.backend == "s3" and not settings.s3.endpoint:
        raise SettingsError("storage.backend is 's3' but s3.endpoint is empty")
    if settings.spool.batch_instances < 1 or settings.spool.upload_concurrency < 1:
        raise SettingsError("spool.batch_instances and spool.upload_concurrency must be at least 1")
    _validate_dicom(settings.dicom)
    settings.dicom_tls.validate(settings.dicom.port)
    if not settings.http.share_max_hours > 0:
        raise SettingsError("http.share_max_hours must be positive")
    if settings.http.max_rendered_instances < 1:
        raise SettingsError("http.max_rendered_instances must be at least 1")
    _validate_http_tls(settings.http)
    if settings.deid.date_shift_max_days < 1:
        raise SettingsError("deid.date_shift_max_days must be at least 1")
    _validate_fhir(settings.fhir)
    _validate_hl7(settings.hl7)
    settings.oidc.validate()
    _validate_networks("dicom.allowed_peers", settings.dicom.allowed_peers)
    _validate_networks("network.trusted_proxies", settings.network.trusted_proxies)
    _validate_networks("login.trusted_networks", settings.login.trusted_networks)
    if not settings.login.totp_issuer.strip():
        raise SettingsError("login.totp_issuer must not be empty: authenticator apps show it")
    _validate_serve(settings)
    _validate_cluster(settings.cluster)


def _validate_http_tls(http: HttpSettings) -> None:
    if http.plain and (http.tls_cert_file or http.tls_key_file):
        raise SettingsError("http.plain is set together with http.tls_cert_file/tls_key_file: choose HTTPS or plain HTTP")
    if bool(http.tls_cert_file) != bool(http.tls_key_file):
        raise SettingsError("http.tls_cert_file and http.tls_key_file go together: set both, or neither")
    if http.hsts_max_age < 0:
        raise SettingsError(f"http.hsts_max_age must be 0 (no header) or more, got {http.hsts_max_age}")


def _validate_networks(name: str, entries: list[str]) -> None:
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise SettingsError(f"{name}: {entry!r} is not an address or CIDR network") from None


def _validate_serve(settings: Settings) -> None:
    serve = settings.serve
    if serve.workers < 0:
        raise SettingsError(f"serve.workers must be 0 (one per CPU) or more, got {serve.workers}")
    if serve.process_count > 1 and 0 in (settings.dicom.port, settings.http.port):
        raise SettingsError("serve.workers above 1 needs a fixed dicom.port and http.port (the workers share them)")


def _validate_dicom(dicom: DicomSettings) -> None:
    dicom.destinations()
    if dicom.max_associations < 1 or dicom.max_waiting_connections < 1:
        raise SettingsError("dicom.max_associations and dicom.max_waiting_connections must be at least 1")
    if dicom.max_connections_per_peer < 0 or dicom.reserved_associations < 0:
        raise SettingsError("dicom.max_connections_per_peer and dicom.reserved_associations must not be negative")
    if not dicom.association_request_timeout > 0 or not dicom.network_timeout > 0:
        raise SettingsError("dicom.association_request_timeout and dicom.network_timeout must be positive")
    if dicom.max_message_bytes < 65536 or dicom.max_pdu_size < 0:
        raise SettingsError("dicom.max_message_bytes must be at least 65536 and dicom.max_pdu_size not negative")


def _validate_fhir(fhir: FhirSettings) -> None:
    if fhir.base_url and not fhir.base_url.startswith(("http://", "https://")):
        raise SettingsError("fhir.base_url must be an http:// or https:// URL")
    if not 0 < fhir.retry_initial_seconds <= fhir.retry_max_seconds:
        raise SettingsError("fhir.retry_initial_seconds must be positive and at most fhir.retry_max_seconds")
    if fhir.timeout_seconds <= 0 or fhir.stable_seconds < 0:
        raise SettingsError("fhir.timeout_seconds must be positive and fhir.stable_seconds not negative")
    fhir.mrn_systems()
    if (fhir.tls_ca_file or fhir.tls_cert_file or fhir.tls_key_file) and not fhir.base_url.startswith("https://"):
        raise SettingsError("fhir.tls_* are set but fhir.base_url is not an https:// URL")
    try:
        zoneinfo.ZoneInfo(fhir.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"fhir.timezone: unknown time zone {fhir.timezone!r}") from None



def _validate_hl7(hl7: Hl7Settings) -> None:
    for name, port in (("hl7.port", hl7.port), ("hl7.outbound_port", hl7.outbound_port)):
        if not 0 <= port <= 65535:
            raise SettingsError(f"{name} must be a TCP port, got {port}")
    if bool(hl7.outbound_host.strip()) != bool(hl7.outbound_port):
        raise SettingsError("hl7.outbound_host and hl7.outbound_port go together: set both, or neither")
    if not hl7.outbound_timeout_seconds > 0:
        raise SettingsError("hl7.outbound_timeout_seconds must be positive")
    if not hl7.application.strip():
        raise SettingsError("hl7.application must not be empty")
    try:
        codecs.lookup(hl7.encoding)
    except LookupError:
        raise SettingsError(f"hl7.encoding: unknown encoding {hl7.encoding!r}") from None
    hl7.station_map()
    outbound_tls = (hl7.outbound_tls_ca_file, hl7.outbound_tls_cert_file, hl7.outbound_tls_key_file, hl7.outbound_tls_server_name)
    if any(outbound_tls) and not hl7.outbound_tls:
        raise SettingsError("hl7.outbound_tls_* are set but hl7.outbound_tls is off: set hl7.outbound_tls = true")
    if (hl7.tls_key_file or hl7.tls_client_ca_file or hl7.tls_require_client_cert) and not hl7.tls_cert_file:
        raise SettingsError("hl7.tls_key_file, tls_client_ca_file and tls_require_client_cert need hl7.tls_cert_file")
    for entry in hl7.allowed_peers:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise SettingsError(f"hl7.allowed_peers: {entry!r} is not an address or CIDR network") from None


def _validate_cluster(cluster: ClusterSettings) -> None:
    if not cluster.heartbeat_seconds > 0:
        raise SettingsError("cluster.heartbeat_seconds must be positive")
    if not cluster.lease_seconds >= 2 * cluster.heartbeat_seconds:
        raise SettingsError("cluster.lease_seconds must be at least twice cluster.heartbeat_seconds")
    if len(cluster.node_name) > 100 or "/" in cluster.node_name:
        raise SettingsError("cluster.node_name must be at most 100 characters, without '/'")


def reference_markdown() -> str:
    """The configuration reference, one table row per option."""
    rows = ["| TOML key | environment variable | default | meaning |", "| --- | --- | --- | --- |"]
    sections = _sections()

    def row(section: str | None, f: dataclasses.Field) -> str:
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if isinstance(default, list):
            default = "[" + ", ".join(default) + "]"
        key = f"{section}.{f.name}" if section else f.name
        return f"| `{key}` | `{env_name(section, f.name)}` | `{default}` | {f.metadata['doc']} |"

    for f in dataclasses.fields(Settings):
        if f.name not in sections:
            rows.append(row(None, f))
    for f in dataclasses.fields(Settings):
        if f.name in sections:
            rows.extend(row(f.name, sub) for sub in dataclasses.fields(sections[f.name]))
    return "\n".join(rows) + "\n"


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as a dictionary with secrets masked, for display."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = {
                sub.name: ("***" if sub.metadata.get("secret") and getattr(value, sub.name) else getattr(value, sub.name))
                for sub in dataclasses.fields(value)
            }
        else:
            out[f.name] = value
    return out
