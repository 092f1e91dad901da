"""Tables of the index, one per DICOM information level (SQLAlchemy Core, SQLite and PostgreSQL).

Study and series rows carry their related counts and the study's modalities,
kept current at ingest, so study-level queries never aggregate instances.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

SCHEMA_VERSION = 1

metadata = MetaData()

schema_info = Table(
    "schema_info",
    metadata,
    Column("version", Integer, nullable=False),
)

patients = Table(
    "patients",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("patient_id", String(64), nullable=False),
    Column("issuer", String(64), nullable=False, default=""),
    Column("patient_name", String(324), nullable=False, default=""),
    Column("patient_name_folded", String(324), nullable=False, default=""),
    Column("birth_date", String(8), nullable=False, default=""),
    Column("sex", String(16), nullable=False, default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("patient_id", "issuer", name="uq_patients_id_issuer"),
    Index("ix_patients_name_folded", "patient_name_folded"),
)

# Other identifiers of the same patient (Other Patient IDs Sequence): national
# citizen ID, health-insurance number, other hospitals' MRNs.
patient_identifiers = Table(
    "patient_identifiers",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("patient_pk", ForeignKey("patients.pk", ondelete="CASCADE"), nullable=False),
    Column("identifier", String(64), nullable=False),
    Column("issuer", String(64), nullable=False, default=""),
    Column("id_type", String(16), nullable=False, default=""),
    UniqueConstraint("patient_pk", "identifier", "issuer", name="uq_patient_identifiers"),
    Index("ix_patient_identifiers_identifier", "identifier"),
)

studies = Table(
    "studies",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("study_uid", String(64), nullable=False, unique=True),
    Column("patient_pk", ForeignKey("patients.pk"), nullable=False),
    Column("study_date", String(8), nullable=False, default=""),
    Column("study_time", String(16), nullable=False, default=""),
    Column("accession_number", String(16), nullable=False, default=""),
    Column("study_id", String(16), nullable=False, default=""),
    Column("study_description", String(64), nullable=False, default=""),
    Column("referring_physician_name", String(324), nullable=False, default=""),
    Column("referring_physician_folded", String(324), nullable=False, default=""),
    Column("modalities", String(256), nullable=False, default=""),
    Column("num_series", Integer, nullable=False, default=0),
    Column("num_instances", Integer, nullable=False, default=0),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_studies_patient", "patient_pk"),
    Index("ix_studies_accession", "accession_number"),
    Index("ix_studies_date", "study_date"),
)

series = Table(
    "series",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("series_uid", String(64), nullable=False, unique=True),
    Column("study_pk", ForeignKey("studies.pk"), nullable=False),
    Column("modality", String(16), nullable=False, default=""),
    Column("series_number", Integer),
    Column("series_description", String(64), nullable=False, default=""),
    Column("body_part_examined", String(16), nullable=False, default=""),
    Column("performed_start_date", String(8), nullable=False, default=""),
    Column("performed_start_time", String(16), nullable=False, default=""),
    Column("num_instances", Integer, nullable=False, default=0),
    Index("ix_series_study", "study_pk"),
)

instances = Table(
    "instances",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("sop_instance_uid", String(64), nullable=False, unique=True),
    Column("series_pk", ForeignKey("series.pk"), nullable=False),
    Column("sop_class_uid", String(64), nullable=False),
    Column("instance_number", Integer),
    Column("transfer_syntax_uid", String(64), nullable=False),
    Column("rows", Integer),
    Column("columns", Integer),
    Column("bits_allocated", Integer),
    Column("number_of_frames", Integer),
    Column("size", BigInteger, nullable=False),
    Column("object_key", String(256), nullable=False),
    # SHA-256 (hex) of the object's bytes: filers compare by it, caches key by it; '' for rows of older releases
    Column("checksum", String(64), nullable=False, default=""),
    Column("source_ae", String(16), nullable=False, default=""),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Index("ix_instances_series", "series_pk"),
)

# WADO-RS metadata of each instance (zlib-compressed DICOM JSON), so that study
# and series metadata come from one query, never from reading every object.
instance_metadata = Table(
    "instance_metadata",
    metadata,
    Column("instance_pk", ForeignKey("instances.pk", ondelete="CASCADE"), primary_key=True),
    Column("document", LargeBinary, nullable=False),
)

# Where an instance's uncompressed frames lie in its stored object, so that a
# frame is one ranged read (S3 Range GET, file seek), not the whole object.
instance_pixels = Table(
    "instance_pixels",
    metadata,
    Column("instance_pk", ForeignKey("instances.pk", ondelete="CASCADE"), primary_key=True),
    Column("data_offset", BigInteger, nullable=False),
    Column("frame_length", BigInteger, nullable=False),
)

# The pseudonym vault: what a pseudonym stood for, sealed with AES-GCM under a
# key the database never sees. Lookups are keyed digests of original values
# (patient IDs, accession numbers, UIDs), so an authorised query can find a
# pseudonym by its original without decrypting every row.
pseudonym_vault = Table(
    "pseudonym_vault",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("pseudonym", String(64), primary_key=True),
    Column("key_id", String(16), nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

pseudonym_lookup = Table(
    "pseudonym_lookup",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("pseudonym", String(64), primary_key=True),
)

# Accounts: users with a role, bearer tokens (stored as SHA-256 digests), the
# patients and studies a referring physician may see, and the audit trail.
users = Table(
    "users",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("display_name", String(128), nullable=False, default=""),
    Column("password_hash", String(256), nullable=False, default=""),
    Column("disabled", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("user_pk", ForeignKey("users.pk", ondelete="CASCADE"), nullable=False),
    Column("label", String(64), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked", Integer, nullable=False, default=0),
)

# A referring physician's patients, by Patient ID and Issuer of Patient ID: MRN-1 of one hospital is not
# MRN-1 of another.
user_patient_ids = Table(
    "user_patient_ids",
    metadata,
    Column("user_pk", ForeignKey("users.pk", ondelete="CASCADE"), primary_key=True),
    Column("patient_id", String(64), primary_key=True),
    Column("issuer", String(64), primary_key=True),
)

# Single sign-on users (storage.index.sso_accounts): the provider's issuer and subject of each account made for one.
sso_identities = Table(
    "sso_identities",
    metadata,
    Column("issuer", String(512), primary_key=True),
    Column("subject", String(255), primary_key=True),
    Column("user_pk", ForeignKey("users.pk", ondelete="CASCADE"), nullable=False, unique=True),
    Column("last_seen", DateTime(timezone=True), nullable=False),
)

# Links that name no issuer (made before the patient was indexed, or by an earlier release): each opens the
# patient with that ID only while the index holds the ID under a single issuer (storage.index.hierarchy).
user_patients = Table(
    "user_patients",
    metadata,
    Column("user_pk", ForeignKey("users.pk", ondelete="CASCADE"), primary_key=True),
    Column("patient_id", String(64), primary_key=True),
)

user_studies = Table(
    "user_studies",
    metadata,
    Column("user_pk", ForeignKey("users.pk", ondelete="CASCADE"), primary_key=True),
    Column("study_uid", String(64), primary_key=True),
)

# Login attempts, per account name and address, per address, per account name (each key a SHA-256 digest:
# no typed name kept in clear), shared by every gateway process using the index (storage.index.login_throttle).
login_throttle = Table(
    "login_throttle",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("account", String(64), nullable=False, server_default=""),  # the name's digest ('' for an address): unlock
    Column("failures", Integer, nullable=False),  # attempts within the window that started at window_start
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("last_failure", DateTime(timezone=True), nullable=False),  # the last attempt
    Column("lockouts", Integer, nullable=False),  # in a row: each one lasts twice as long as the one before
    Column("locked_until", DateTime(timezone=True)),
    Index("ix_login_throttle_last_failure", "last_failure"),
    Index("ix_login_throttle_account", "account"),
)

# The key the audit trail digests values with when the gateway holds no de-identification secret: one row,
# made at first use (AccountStore.audit_key).
audit_keys = Table(
    "audit_keys",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=False),
    Column("key", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Append-only: rows are inserted, never updated or deleted by the gateway (modelled on IHE ATNA).
audit_events = Table(
    "audit_events",
    metadata,
    Column("pk", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("username", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("action", String(32), nullable=False),
    Column("target", String(512), nullable=False, default=""),
    Column("source", String(64), nullable=False, default=""),
    Column("outcome", Integer, nullable=False),
    Index("ix_audit_at", "at"),
    Index("ix_audit_user", "username"),
)


# Radiology reports, one per study: a draft that its author saves over, then final (never edited again).
reports = Table(
    "reports",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("study_uid", String(64), nullable=False, unique=True),
    Column("status", String(16), nullable=False),  # 'draft' or 'final'
    Column("template", String(64), nullable=False, default=""),
    Column("findings", Text, nullable=False, default=""),
    Column("impression", Text, nullable=False, default=""),
    Column("author_username", String(64), nullable=False),  # who last saved it
    Column("author_name", String(128), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finalized_at", DateTime(timezone=True)),
    Column("finalized_by", String(64), nullable=False, default=""),
    Column("finalized_by_name", String(128), nullable=False, default=""),
)

# Work for other systems (the EMR link), written in the same transaction as the change it announces,
# so that nothing is announced that did not happen and nothing that happened goes unannounced.
outbox = Table(
    "outbox",
    metadata,
    Column("pk", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),  # e.g. 'diagnostic-report'
    Column("subject", String(64), nullable=False),  # e.g. the study UID
    Column("payload", Text, nullable=False),  # JSON
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
    Column("last_error", String(512), nullable=False, default=""),
    # The worker delivering it now (``<node>/<pid>``) until ``lease_until``: one delivery at a time across nodes.
    Column("holder", String(128), nullable=False, default=""),
    Column("lease_until", DateTime(timezone=True)),
    Index("ix_outbox_due", "kind", "delivered_at", "next_attempt_at"),
    Index("ix_outbox_subject", "subject", "delivered_at"),
)

# Links that open one study for a patient or a doctor outside the hospital, without an account.
# Only the SHA-256 digest of a link's token is kept.
share_links = Table(
    "share_links",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("study_uid", String(64), nullable=False),
    Column("label", String(128), nullable=False, default=""),
    Column("created_by", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked", Integer, nullable=False, default=0),
    Column("revoked_at", DateTime(timezone=True)),
    Column("revoked_by", String(64), nullable=False, default=""),
    Index("ix_share_links_study", "study_uid"),
)

# ------------------------------------------------------------------ EMR link (FHIR)

# Studies change while instances arrive; the EMR link publishes a study once it has been quiet for a while.
# Index on updated_at: the publisher looks only at studies changed lately. Created explicitly for existing
# databases (create_all adds no index to a table that already exists).
ix_studies_updated_at = Index("ix_studies_updated_at", studies.c.updated_at)

# Which state of each study (its updated_at) has been announced in the outbox.
study_publications = Table(
    "study_publications",
    metadata,
    Column("study_uid", String(64), primary_key=True),
    Column("study_updated_at", DateTime(timezone=True), nullable=False),
    Column("announced_at", DateTime(timezone=True), nullable=False),
    Index("ix_study_publications_updated", "study_updated_at"),
)

# A study's resources in the EMR: its Patient (matched, or chosen by an administrator) and what was published.
fhir_links = Table(
    "fhir_links",
    metadata,
    Column("study_uid", String(64), primary_key=True),
    Column("patient_ref", String(128), nullable=False, default=""),  # e.g. Patient/123
    Column("link_source", String(16), nullable=False, default=""),  # 'matched' or 'manual'
    Column("imaging_study_ref", String(128), nullable=False, default=""),
    Column("diagnostic_report_ref", String(128), nullable=False, default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # SHA-256 of the ImagingStudy content last accepted: the same content is not written again.
    Column("imaging_study_digest", String(64), nullable=False, default=""),
)

# Studies whose patient the EMR link could not find (or found several times), for an administrator.
# No identifier in clear: what was tried is kept as kind, system and number of matches.
reconciliation_queue = Table(
    "reconciliation_queue",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("study_uid", String(64), nullable=False),
    Column("patient_pk", Integer),
    Column("reason", String(256), nullable=False),
    Column("tried", Text, nullable=False, default="[]"),  # JSON
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),
    Column("resolved_by", String(64), nullable=False, default=""),
    Column("patient_ref", String(128), nullable=False, default=""),
    Index("ix_reconciliation_study", "study_uid"),
)

# Destinations that already accepted an outbox message sent to several (FHIR and HL7 v2), so that a retry
# after a partial failure sends it only where it is still missing.
outbox_acceptances = Table(
    "outbox_acceptances",
    metadata,
    Column("outbox_pk", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("destination", String(16), primary_key=True),
    Column("accepted_at", DateTime(timezone=True), nullable=False),
)

# ------------------------------------------------------------------ EMR link (HL7 v2): demographics, worklist

# Patients whose demographics the EMR gave (ADT, orders): ingest no longer overwrites their name, birth date
# and sex with a modality's spelling.
# Modality Performed Procedure Steps (MPPS N-CREATE, N-SET): what a modality says it is doing for which steps.
performed_steps = Table(
    "performed_steps",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("sop_instance_uid", String(64), nullable=False, unique=True),
    Column("status", String(16), nullable=False),  # IN PROGRESS, COMPLETED, DISCONTINUED
    Column("calling_ae", String(16), nullable=False, default=""),
    Column("scheduled", Text, nullable=False, default="[]"),  # JSON: [{study_uid, accession_number, sps_id}]
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

emr_patients = Table(
    "emr_patients",
    metadata,
    Column("patient_pk", ForeignKey("patients.pk", ondelete="CASCADE"), primary_key=True),
    Column("since", DateTime(timezone=True), nullable=False),
)

# The modality worklist: one row per scheduled procedure step of an order (ORM^O01, OMI^O23). An order is
# known by its placer order number (else filler order number, else accession); it leaves the worklist when
# cancelled or when images with its accession number are indexed (COMPLETED, with the study UID received).
worklist_items = Table(
    "worklist_items",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("order_key", String(200), nullable=False),
    Column("sps_id", String(16), nullable=False),
    Column("patient_pk", ForeignKey("patients.pk"), nullable=False),
    Column("placer_order_number", String(100), nullable=False, default=""),
    Column("filler_order_number", String(100), nullable=False, default=""),
    Column("accession_number", String(16), nullable=False, default=""),
    Column("requested_procedure_id", String(16), nullable=False, default=""),
    Column("requested_procedure_description", String(64), nullable=False, default=""),
    Column("procedure_code_value", String(64), nullable=False, default=""),  # Long Code Value past 16
    Column("procedure_code_scheme", String(16), nullable=False, default=""),
    Column("procedure_code_meaning", String(64), nullable=False, default=""),
    Column("sps_description", String(64), nullable=False, default=""),
    Column("modality", String(16), nullable=False, default=""),
    Column("station_aet", String(16), nullable=False, default=""),
    Column("station_name", String(16), nullable=False, default=""),
    Column("location", String(16), nullable=False, default=""),
    Column("scheduled_date", String(8), nullable=False, default=""),
    Column("scheduled_time", String(6), nullable=False, default=""),
    Column("referring_physician_name", String(324), nullable=False, default=""),
    Column("referring_physician_folded", String(324), nullable=False, default=""),
    Column("performing_physician_name", String(324), nullable=False, default=""),
    Column("performing_physician_folded", String(324), nullable=False, default=""),
    Column("protocol_code_value", String(64), nullable=False, default=""),  # Scheduled Protocol Code (IPC-6)
    Column("protocol_code_scheme", String(16), nullable=False, default=""),
    Column("protocol_code_meaning", String(64), nullable=False, default=""),
    Column("study_uid", String(64), nullable=False),  # pre-assigned (IPC-3, or made once per order)
    Column("status", String(16), nullable=False),  # SCHEDULED, IN PROGRESS (MPPS), CANCELLED, COMPLETED
    Column("completed_study_uid", String(64), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("order_key", "sps_id", name="uq_worklist_order_sps"),
    Index("ix_worklist_status_date", "status", "scheduled_date"),
    Index("ix_worklist_accession", "accession_number"),
    Index("ix_worklist_patient", "patient_pk"),
    Index("ix_worklist_study", "study_uid"),
    Index("ix_worklist_placer", "placer_order_number"),
    Index("ix_worklist_filler", "filler_order_number"),
    Index("ix_worklist_completed_study", "completed_study_uid"),
)


# ------------------------------------------------------------------ cluster coordination

# Work claimed by one process of the cluster at a time (a lease), retried with a reason, never queued twice
# (the key is unique; a done task keeps its key, so the same work is not queued again).
tasks = Table(
    "tasks",
    metadata,
    Column("pk", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("key", String(255), nullable=False, unique=True),
    Column("payload", Text, nullable=False, default=""),  # JSON
    Column("state", String(8), nullable=False, default="queued"),  # queued / done / failed (given up)
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("holder", String(128), nullable=False, default=""),
    Column("lease_until", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_reason", String(512), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("done_at", DateTime(timezone=True)),
    Index("ix_tasks_due", "state", "kind", "due_at"),
)

# Named site leases: what one process of the whole site does at a time (the HL7 listener, the stable-study scan).
site_leases = Table(
    "site_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("lease_until", DateTime(timezone=True), nullable=False),
    Column("acquired_at", DateTime(timezone=True), nullable=False),
)

# Every gateway process's last heartbeat, for the cluster view of /health.
cluster_nodes = Table(
    "cluster_nodes",
    metadata,
    Column("node", String(128), primary_key=True),
    Column("process", String(64), primary_key=True),
    Column("role", String(32), nullable=False, default=""),
    Column("pid", Integer, nullable=False),
    Column("version", String(32), nullable=False, default=""),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("beat_at", DateTime(timezone=True), nullable=False),
    Column("info", Text, nullable=False, default=""),  # JSON: spool backlog and the like, never patient data
)

# Local accounts' second factor (storage.index.second_factor): a TOTP secret sealed with AES-GCM, pending until
# its first code confirms it, and the last time step a code was accepted for (a code is good once).
second_factors = Table(
    "second_factors",
    metadata,
    Column("user_pk", ForeignKey("users.pk", ondelete="CASCADE"), primary_key=True, autoincrement=False),
    Column("key_id", String(16), nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("confirmed_at", DateTime(timezone=True)),
    Column("last_step", BigInteger),
)

# Recovery codes as SHA-256 digests, each good once (used_at set).
recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("user_pk", ForeignKey("users.pk", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True)),
    Index("ix_recovery_codes_user", "user_pk"),
)

# The key sealing TOTP secrets when the gateway holds no de-identification secret: one row, made at first use.
second_factor_keys = Table(
    "second_factor_keys",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=False),
    Column("key", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
