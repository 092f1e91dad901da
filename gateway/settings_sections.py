"""The sections of the gateway's settings, one dataclass each, with every option's default and documentation.

``gateway.settings`` reads them (TOML, then environment, then flags) into one ``Settings`` object.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway.tls import ReloadableServerContext, TlsConfigError, check_private_file, client_context
from storage.object_store.s3_sse import S3Encryption, parse_customer_key


class SettingsError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


def opt(default: Any, doc: str, *, secret: bool = False) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"doc": doc, "secret": secret})
    return field(default=default, metadata={"doc": doc, "secret": secret})


@dataclass
class DicomSettings:
    ae_title: str = opt("PACSGW", "AE title of the DICOM SCP.")
    host: str = opt("0.0.0.0", "Address the DICOM SCP listens on.")
    port: int = opt(11112, "TCP port of the DICOM SCP.")
    allowed_calling_aets: list[str] = opt(
        [],
        "Calling AE titles allowed to associate; empty allows any. With `*` in the list any other title is allowed "
        "too, but the last `dicom.reserved_associations` slots are kept for the titles listed.",
    )
    allowed_peers: list[str] = opt(
        [], "Peer addresses or CIDR networks allowed to associate; empty allows any."
    )
    max_associations: int = opt(
        32,
        "Most associations served at once; more are rejected (transient). Connections still waiting for their "
        "A-ASSOCIATE-RQ do not count.",
    )
    reserved_associations: int = opt(
        4,
        "Association slots only the calling AE titles named in `dicom.allowed_calling_aets` may take, when that list "
        "also has `*` (any other caller); at most `dicom.max_associations` - 1.",
    )
    association_request_timeout: float = opt(
        5.0, "Seconds a new connection has to send its A-ASSOCIATE-RQ; then it is closed."
    )
    max_connections_per_peer: int = opt(
        16,
        "Most connections one peer address holds at once, associated or waiting for its request; more are closed at "
        "once. 0: no limit.",
    )
    max_waiting_connections: int = opt(
        64,
        "Most connections waiting for their A-ASSOCIATE-RQ at once; one more closes the one that has waited longest.",
    )
    max_pdu_size: int = opt(
        4_194_304,
        "Largest P-DATA PDU we accept, in bytes (0 = unlimited, up to `dicom.max_message_bytes`). Large PDUs ingest "
        "faster; a longer PDU aborts the association.",
    )
    max_message_bytes: int = opt(
        2_147_483_648,
        "Largest DIMSE message (a C-STORE dataset, a query identifier) reassembled in memory, in bytes; a larger one "
        "aborts the association (nothing of it is stored). Allow about twice the largest object in RAM per association.",
    )
    network_timeout: float = opt(
        60.0,
        "Seconds without network activity (a PDU not complete, a response the peer does not read) before an "
        "association is aborted.",
    )
    query_aets: list[str] = opt(
        [],
        "Calling AE titles allowed to query and retrieve (C-FIND, C-MOVE, C-GET); everyone else is answered "
        "'not authorized'. Empty: nobody.",
    )
    move_destinations: list[str] = opt(
        [], "C-MOVE destinations as AE=host:port (e.g. WORKSTATION1=10.1.2.3:104); other destinations get 0xA801."
    )
    max_retrieve_instances: int = opt(100_000, "Most instances one C-MOVE or C-GET sends.")

    def destinations(self) -> dict[str, tuple[str, int]]:
        """``move_destinations`` as AE title -> (host, port)."""
        out = {}
        for entry in self.move_destinations:
            ae, _, address = entry.partition("=")
            host, _, port = address.rpartition(":")
            if not ae.strip() or not host or not port.isdigit():
                raise SettingsError(f"dicom.move_destinations: {entry!r} is not AE=host:port")
            out[ae.strip()] = (host, int(port))
        return out
    max_find_results: int = opt(10_000, "Most matches one C-FIND returns; a broader query fails with a request to narrow it.")
    worklist_aets: list[str] = opt(
        [],
        "Calling AE titles allowed to query the modality worklist (C-FIND, MWL) and to report performed procedure "
        "steps (MPPS), usually the modalities; `*` allows any. Empty: nobody (a worklist lists patients' names and IDs).",
    )
    default_issuer_of_patient_id: str = opt(
        "",
        "Issuer of Patient ID given in the index to identified instances that arrive without one (usually the "
        "hospital's MRN authority, as the EMR names it in PID-3.4), so a modality's images and the EMR's patient "
        "are one patient. Empty: none. The stored object is kept as received.",
    )


@dataclass
class NetworkSettings:
    trusted_proxies: list[str] = opt(
        [],
        "Addresses or CIDR networks of load balancers (HAProxy) whose word on the client is taken. A DICOM or HL7 "
        "connection from one must begin with a PROXY protocol header (v2 or v1: HAProxy's `send-proxy-v2`) within "
        "3 s, else it is closed; its client address is then used for `dicom.allowed_peers`, `hl7.allowed_peers`, "
        "`dicom.max_connections_per_peer`, the audit trail and logs. Over HTTP, X-Forwarded-For (its rightmost hop "
        "that is not a trusted proxy), X-Forwarded-Proto and X-Forwarded-Host (as the nearest proxy wrote them) count only on "
        "requests from one. Empty: nobody's word is taken.",
    )


@dataclass
class HttpSettings:
    host: str = opt("0.0.0.0", "Address the HTTP server (health, metrics, DICOMweb) listens on.")
    port: int = opt(8042, "TCP port of the HTTP server.")
    public_url: str = opt(
        "",
        "URL clients reach the gateway at (e.g. https://pacs.example.vn); used in Retrieve URLs and BulkDataURIs "
        "(empty: the request's Host) and in share links, which are made only when it is set.",
    )
    share_max_hours: float = opt(720.0, "Longest a share link may stay valid, in hours (asked for when it is made; default 72).")
    max_rendered_instances: int = opt(
        500,
        "Most instances a study's or series' WADO-RS /rendered renders in one answer (each is decoded and rendered "
        "before the answer starts); more answer 413, asking for a series or its instances one by one.",
    )
    tls_cert_file: str = opt(
        "",
        "PEM certificate (chain) the HTTP server shows; read again on SIGHUP, connections under way go on. Empty and "
        "`http.plain` not set: a trial CA and certificate are made once in `<data_dir>/tls/` (start-up log names the CA "
        "for `curl --cacert`); replace them with the hospital's own for production.",
    )
    tls_key_file: str = opt(
        "",
        "PEM private key of `http.tls_cert_file`; the gateway refuses to start when its group or others may read it "
        "(chmod 600).",
    )
    plain: bool = opt(
        False,
        "Serve plain HTTP instead of HTTPS: only behind a TLS-terminating proxy (list it in `network.trusted_proxies`, "
        "whose X-Forwarded-For/-Proto/-Host are then taken) or on an isolated bench. Refused together with a "
        "certificate.",
    )
    hsts_max_age: int = opt(
        31_536_000,
        "Strict-Transport-Security max-age (seconds) sent on HTTPS answers (also behind a trusted proxy that says "
        "X-Forwarded-Proto: https); 0 sends none.",
    )


@dataclass
class StorageSettings:
    backend: Literal["local", "s3"] = opt(
        "local", "Object store: 'local' (a directory under the data dir) or 's3' (any S3-compatible server)."
    )
    local_path: str = opt("", "Directory of the local object store; empty means <data_dir>/objects.")
    read_cache_bytes: int = opt(
        134_217_728,
        "Bytes of recently read or written objects kept in memory in front of S3 (WADO-RS frames, instances, "
        "rendering); found by key and the checksum the index names, so never stale; 0 disables it. "
        "Per process, so N workers hold N caches; the local store relies on the OS page cache instead.",
    )
    require_create_only: bool = opt(
        False,
        "Refuse to start, and to file, unless new objects are written create-only (S3: the server honours "
        "If-None-Match: *, checked at start and at the first write); instances wait in the spool meanwhile. "
        "The local store always is. Objects above 5 GiB (S3 multipart) are verified by checksum instead.",
    )


@dataclass
class S3Settings:
    endpoint: str = opt("", "S3 endpoint as host:port, without scheme (e.g. minio:9000).")
    bucket: str = opt("pacs", "Bucket holding the DICOM objects; created if missing.")
    access_key: str = opt("", "S3 access key.", secret=True)
    secret_key: str = opt("", "S3 secret key.", secret=True)
    secure: bool = opt(True, "Use TLS (https) to reach the S3 endpoint.")
    region: str = opt("", "S3 region; empty lets the client discover it.")
    connect_timeout: float = opt(5.0, "Seconds to wait for a connection to the S3 endpoint.")
    read_timeout: float = opt(60.0, "Seconds to wait for an S3 response.")
    ca_file: str = opt(
        "",
        "CA bundle (PEM) that the S3 server's certificate must chain to, with `s3.secure`; empty: the system's CAs. "
        "TLS 1.2+ with the BCP 195 suites either way.",
    )
    sse: Literal["none", "sse-s3", "sse-kms", "sse-c"] = opt(
        "none",
        "Server-side encryption of every object written: 'sse-s3' (the server's key), 'sse-kms' (a key of the "
        "server's KMS, `s3.sse_kms_key_id`) or 'sse-c' (the key in `s3.sse_customer_key[_file]`, sent with every "
        "read and write). At start a probe object must come back encrypted, or the gateway does not start.",
    )
    sse_kms_key_id: str = opt("", "KMS key id or ARN for 'sse-kms'; empty: the server's default KMS key.")
    sse_customer_key: str = opt(
        "",
        "SSE-C key: 256 bits as base64 (44 characters) or 64 hex digits. Objects are unreadable without it: keep "
        "it in a secrets store and in the backups of keys. Needs `s3.secure`, unless the endpoint is on loopback.",
        secret=True,
    )
    sse_customer_key_file: str = opt(
        "",
        "File whose first line is the SSE-C key, read when `s3.sse_customer_key` is empty; refused when its group "
        "or others may read it.",
    )

    def tls_context(self) -> ssl.SSLContext | None:
        """The context of https to the S3 server (None with `s3.secure` false)."""
        if not self.secure:
            return None
        try:
            return client_context(ca_file=self.ca_file, what="s3")
        except TlsConfigError as exc:
            raise SettingsError(str(exc)) from None

    def encryption(self) -> S3Encryption:
        """The encryption these settings ask for; SettingsError on a missing, malformed or unprotected key."""
        if self.sse != "sse-kms" and self.sse_kms_key_id:
            raise SettingsError("s3.sse_kms_key_id is set but s3.sse is not 'sse-kms'")
        if self.sse != "sse-c":
            if self.sse_customer_key or self.sse_customer_key_file:
                raise SettingsError("an SSE-C key is configured but s3.sse is not 'sse-c'")
            return S3Encryption(self.sse, kms_key_id=self.sse_kms_key_id)
        host = self.endpoint.rsplit(":", 1)[0].strip("[]") if ":" in self.endpoint else self.endpoint
        if not self.secure and host not in {"localhost", "127.0.0.1", "::1"}:
            raise SettingsError("s3.sse is 'sse-c' but s3.secure is false: the key would cross the network in clear")
        where, text = "s3.sse_customer_key", self.sse_customer_key
        if not text and self.sse_customer_key_file:
            where = f"s3.sse_customer_key_file {self.sse_customer_key_file}"
            try:
                check_private_file(self.sse_customer_key_file, "s3.sse_customer_key_file")
                lines = Path(self.sse_customer_key_file).read_text(encoding="utf-8").splitlines()
            except TlsConfigError as exc:
                raise SettingsError(str(exc)) from None
            except (OSError, UnicodeDecodeError) as exc:
                raise SettingsError(f"{where}: cannot read it ({exc})") from None
            text = lines[0] if lines else ""
        if not text.strip():
            raise SettingsError("s3.sse is 'sse-c' but neither s3.sse_customer_key nor s3.sse_customer_key_file is set")
        try:
            return S3Encryption("sse-c", customer_key=parse_customer_key(text, where))
        except ValueError as exc:
            raise SettingsError(str(exc)) from None


@dataclass
class IndexSettings:
    url: str = opt(
        "",
        "SQLAlchemy URL of the index database; empty means SQLite at <data_dir>/index.sqlite. "
        "PostgreSQL: postgresql+psycopg://user:password@host/dbname.",
        secret=True,
    )


@dataclass
class SpoolSettings:
    max_bytes: int = opt(
        21_474_836_480, "Largest spool backlog in bytes; beyond it C-STORE answers 0xA700 (out of resources)."
    )
    min_free_bytes: int = opt(
        1_073_741_824, "Disk space always left free on the spool's file system; below it C-STORE answers 0xA700."
    )
    segment_bytes: int = opt(67_108_864, "Size at which a spool log segment is closed and a new one begun.")
    preallocated_segments: int = opt(
        2, "Spool segments zero-filled ahead of need (at most 4); writing into allocated blocks is faster."
    )
    batch_instances: int = opt(64, "Most instances the spool worker moves to storage and index in one batch.")
    upload_concurrency: int = opt(8, "Uploads to the object store running at once.")
    retry_initial_seconds: float = opt(0.5, "First wait after a failed batch; doubles on each failure.")
    retry_max_seconds: float = opt(30.0, "Longest wait between retries of a failed batch.")


@dataclass
class IngestSettings:
    on_duplicate: Literal["keep_first", "replace"] = opt(
        "keep_first",
        "What a re-sent SOP Instance UID does: 'keep_first' keeps the stored object, 'replace' overwrites it.",
    )
    orphan_grace_seconds: float = opt(
        60.0,
        "How long an object with other bytes under an instance's key, not indexed by anyone (its writer died or is "
        "filing it), is left to its writer; the batch is retried meanwhile, then the received instance replaces it.",
    )


@dataclass
class DeidSettings:
    rules_file: str = opt(
        "",
        "De-identification rules file (TOML; see the README). Empty: every instance is stored as received.",
    )
    secret: str = opt(
        "",
        "Secret (at least 32 characters) from which pseudonyms, date shifts and the vault key derive. "
        "Required when a rule pseudonymises or anonymises. Changing it changes every new pseudonym and "
        "leaves the vault unreadable: keep it in a secrets store.",
        secret=True,
    )
    secret_file: str = opt("", "File whose first line is the secret, read when `deid.secret` is empty.")
    date_shift_max_days: int = opt(
        365, "Largest per-patient date shift, in days, under the Modified Dates option (shifts are 1..N days back)."
    )


@dataclass
class FhirSettings:
    base_url: str = opt(
        "",
        "FHIR R4 base URL of the EMR (e.g. https://emr.example.vn/fhir/R4). Empty: no FHIR link (signed reports wait "
        "in the outbox; studies are announced once it is set).",
    )
    token: str = opt("", "Bearer token sent to the FHIR server; empty: no Authorization header.", secret=True)
    token_file: str = opt("", "File whose first line is the bearer token, read when `fhir.token` is empty.")
    timeout_seconds: float = opt(10.0, "Seconds one FHIR request may take before it counts as failed.")
    stable_seconds: float = opt(
        60.0,
        "A study is published (ImagingStudy) once no new instance arrived for this long; later instances publish it "
        "again.",
    )
    retry_initial_seconds: float = opt(5.0, "First wait after a failed delivery; doubles (with jitter) on each failure.")
    retry_max_seconds: float = opt(
        600.0, "Longest wait between attempts; refusals that will not succeed by themselves (HTTP 4xx) wait this long."
    )
    patient_identifier_systems: list[str] = opt(
        ["*=http://fhir.ehealth.gov.vn/core/sid/patient-internal-id"],
        "FHIR identifier system of the hospital MRN (PatientID) per Issuer of Patient ID, as ISSUER=SYSTEM "
        "(e.g. BV-CHORAY=urn:oid:1.2.3); `*` for any other issuer. Default: the Ministry of Health IG's "
        "patient-internal-id system.",
    )
    citizen_id_system: str = opt(
        "http://fhir.hl7.org.vn/core/sid/cccd",
        "FHIR identifier system of the 12-digit national citizen ID (CCCD), as in HL7 Vietnam's VN Core IG.",
    )
    insurance_number_system: str = opt(
        "http://fhir.hl7.org.vn/core/sid/bhyt",
        "FHIR identifier system of the health-insurance (BHYT) card number, as in HL7 Vietnam's VN Core IG.",
    )
    accession_system: str = opt(
        "",
        "FHIR identifier system of accession numbers (the RIS's, e.g. urn:oid:...), for ImagingStudy and the "
        "ServiceRequest search; empty matches an accession number in any system.",
    )
    public_wado_url: str = opt(
        "",
        "DICOMweb base URL the EMR's users reach (the Endpoint's address); empty: http.public_url + /dicom-web.",
    )
    tls_ca_file: str = opt(
        "",
        "CA bundle (PEM) that the FHIR server's certificate must chain to, for an https:// `fhir.base_url`; empty: "
        "the system's CAs. The server's host name is always checked against its certificate.",
    )
    tls_cert_file: str = opt(
        "", "Client certificate (PEM, with its chain) shown to the FHIR server when it asks for one (mutual TLS)."
    )
    tls_key_file: str = opt("", "Private key of `fhir.tls_cert_file` (PEM, readable by its owner only).")
    timezone: str = opt(
        "Asia/Ho_Chi_Minh", "Time zone of DICOM dates and times (they carry none), for FHIR dateTime values."
    )

    def bearer_token(self) -> str:
        """The bearer token, from the setting or its file; "" when neither is set."""
        if self.token or not self.token_file:
            return self.token
        try:
            lines = Path(self.token_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise SettingsError(f"fhir.token_file: cannot read it ({exc.strerror or exc})") from None
        return lines[0].strip() if lines else ""

    def tls_context(self) -> ssl.SSLContext | None:
        """The context for an https:// base URL (server checked, host name matched), or None for http://;
        raises TlsConfigError when a file cannot be used."""
        if not self.base_url.startswith("https://"):
            return None
        return client_context(
            ca_file=self.tls_ca_file, cert_file=self.tls_cert_file, key_file=self.tls_key_file, what="fhir (fhir.tls_*)"
        )

    def mrn_systems(self) -> dict[str, str]:
        """``patient_identifier_systems`` as issuer -> system (``*`` for any other issuer)."""
        out = {}
        for entry in self.patient_identifier_systems:
            issuer, sep, system = entry.partition("=")
            if not sep or not system.strip():
                raise SettingsError(f"fhir.patient_identifier_systems: {entry!r} is not ISSUER=SYSTEM")
            out[issuer.strip()] = system.strip()
        return out


@dataclass
class Hl7Settings:
    port: int = opt(
        2575, "TCP port of the HL7 v2 MLLP listener (ADT, ORM^O01 and OMI^O23 from the EMR or RIS); 0 turns it off."
    )
    host: str = opt("0.0.0.0", "Address the HL7 v2 MLLP listener listens on.")
    allowed_peers: list[str] = opt(
        [],
        "Addresses or CIDR networks of the EMR and RIS allowed to send HL7 messages. Empty: loopback peers only "
        "(127.0.0.0/8, ::1), so an EMR on another host is refused until it is named here.",
    )
    application: str = opt("PACSGW", "Our application name in the HL7 messages we send (MSH-3 of ACKs and ORU^R01).")
    facility: str = opt("RADIOLOGY", "Our facility name in the HL7 messages we send (MSH-4).")
    encoding: str = opt(
        "UTF-8", "Character encoding of the HL7 messages received and of their ACKs (a Python codec name); ORU^R01 is UTF-8."
    )
    outbound_host: str = opt("", "Host of the EMR's MLLP listener that takes final reports as ORU^R01; empty: no ORU.")
    outbound_port: int = opt(0, "TCP port of the EMR's MLLP listener for ORU^R01; 0: no ORU.")
    outbound_timeout_seconds: float = opt(
        10.0, "Seconds to wait for the EMR's ACK to one ORU^R01 (connecting included) before it counts as failed."
    )
    outbound_tls: bool = opt(
        False,
        "Send ORU^R01 over TLS (MLLP over TLS): the EMR's certificate is checked against `hl7.outbound_tls_ca_file` "
        "(else the system's CAs) and its host name against `hl7.outbound_tls_server_name`. A TLS failure is a failed "
        "delivery, retried from the outbox.",
    )
    outbound_tls_ca_file: str = opt("", "CA bundle (PEM) the EMR's MLLP certificate must chain to; empty: the system's CAs.")
    outbound_tls_cert_file: str = opt(
        "", "Client certificate (PEM, with its chain) shown to the EMR's MLLP listener (mutual TLS); empty: none."
    )
    outbound_tls_key_file: str = opt("", "Private key of `hl7.outbound_tls_cert_file` (PEM, readable by its owner only).")
    outbound_tls_server_name: str = opt(
        "", "Host name the EMR's MLLP certificate must carry; empty: `hl7.outbound_host`."
    )
    tls_cert_file: str = opt(
        "",
        "Certificate (PEM, with its chain) of the HL7 listener. Set: `hl7.port` speaks MLLP over TLS only (TLS 1.2+, "
        "BCP 195 suites), read again on SIGHUP; empty: plain MLLP. A PROXY header from `network.trusted_proxies` "
        "comes before the TLS handshake.",
    )
    tls_key_file: str = opt("", "Private key of `hl7.tls_cert_file` (PEM, readable by its owner only).")
    tls_client_ca_file: str = opt(
        "",
        "CA bundle (PEM) of the client certificates the HL7 listener accepts; set, a sender may show one (and must, "
        "with `hl7.tls_require_client_cert`).",
    )
    tls_require_client_cert: bool = opt(
        False, "Refuse an MLLP TLS connection without a client certificate from `hl7.tls_client_ca_file` (mutual TLS)."
    )
    station_aets: list[str] = opt(
        [],
        "Scheduled Station AE Title of ORM^O01 orders by modality, as MODALITY=AE (e.g. CT=CT01), for orders whose "
        "OBR-21 names no station. OMI^O23 orders carry theirs in IPC-9.",
    )

    def listener_tls(self) -> ReloadableServerContext | None:
        """The HL7 listener's TLS context (reloadable), or None for plain MLLP; raises TlsConfigError."""
        if not self.tls_cert_file:
            return None
        return ReloadableServerContext(
            self.tls_cert_file, self.tls_key_file, client_ca_file=self.tls_client_ca_file,
            require_client_cert=self.tls_require_client_cert, what="HL7 listener (hl7.tls_*)",
        )  # fmt: skip

    def outbound_tls_context(self) -> ssl.SSLContext | None:
        """The ORU^R01 sender's TLS context (the EMR checked, its host name matched), or None; raises TlsConfigError."""
        if not self.outbound_tls:
            return None
        return client_context(
            ca_file=self.outbound_tls_ca_file, cert_file=self.outbound_tls_cert_file,
            key_file=self.outbound_tls_key_file, what="ORU^R01 sender (hl7.outbound_tls_*)",
        )  # fmt: skip

    @property
    def outbound_server_name(self) -> str:
        return self.outbound_tls_server_name or self.outbound_host

    def station_map(self) -> dict[str, str]:
        """``station_aets`` as modality -> AE title."""
        out = {}
        for entry in self.station_aets:
            modality, sep, ae = entry.partition("=")
            if not sep or not modality.strip() or not 1 <= len(ae.strip()) <= 16:
                raise SettingsError(f"hl7.station_aets: {entry!r} is not MODALITY=AE (AE title of 1 to 16 characters)")
            out[modality.strip().upper()] = ae.strip()
        return out


@dataclass
class ServeSettings:
    workers: int = opt(
        0,
        "Worker processes of `pacs-gateway serve` (flag `--workers`): each receives DICOM and serves HTTP on the "
        "shared ports, with a spool and a filer of its own, under a supervisor that restarts them; the HL7 listener "
        "and the EMR link run in one more process. 0: one per CPU. 1: the whole gateway in one process, no supervisor.",
    )
    restart_backoff_max_seconds: float = opt(
        30.0, "Longest wait before the supervisor restarts a worker that died (the wait doubles from 0.5 s)."
    )
    stop_timeout_seconds: float = opt(
        30.0, "Seconds the supervisor waits for a process to stop on SIGTERM before it kills it."
    )

    @property
    def process_count(self) -> int:
        """The number of workers: ``workers``, or the CPU count for 0."""
        return self.workers if self.workers > 0 else max(1, os.cpu_count() or 1)


@dataclass
class ClusterSettings:
    node_name: str = opt(
        "",
        "Name of this node in the cluster (in /health's cluster view and in the holder `<node_name>/<pid>` of leases "
        "and tasks); empty: the host name. Every node sharing one index needs its own.",
    )
    heartbeat_seconds: float = opt(
        5.0,
        "Seconds between a process's heartbeats: it registers in the index and renews its site leases (the HL7 "
        "listener's). A process not heard from for three heartbeats is shown stale.",
    )
    lease_seconds: float = opt(
        20.0,
        "Seconds a lease lasts unless renewed: how long after a process dies another takes over its site leases "
        "(the HL7 listener, the stable-study scan) and its claimed outbox deliveries. At least twice "
        "`cluster.heartbeat_seconds`.",
    )
