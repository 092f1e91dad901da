"""Prometheus metrics of one gateway process, in a registry of its own (no global state).

Under the supervisor (``serve.workers`` above 1) every process writes its values to
files in ``PROMETHEUS_MULTIPROC_DIR`` (set by the supervisor before any child
imports prometheus_client: ``multiprocess_dir``), and ``render`` adds up every
process's: counters and histograms summed, gauges as their ``multiprocess_mode``
says (the spool backlog and the open associations summed over the live workers;
the EMR outbox gauges, set by the one process that runs the EMR link, its value).
A gauge computed on demand (``set_function``) is sampled into its file by
``sample()``, which each worker calls with its heartbeat.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import Gauge as _Gauge

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir(data_path: Path) -> Path:
    return data_path / "run" / "metrics"


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class Gauge(_Gauge):
    """A gauge whose ``set_function`` also works in multiprocess mode: ``sample()`` writes the function's value."""

    _function: Callable[[], float] | None = None

    def set_function(self, f: Callable[[], float]) -> None:
        if multiprocess():
            self._function = f
        else:
            super().set_function(f)

    def sample(self) -> None:
        if self._function is not None:
            self.set(self._function())


class GatewayMetrics:
    """The metrics of the gateway: created once per process, rendered for every process of the gateway."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        live_sum: Any = {"multiprocess_mode": "livesum"}
        one_process: Any = {"multiprocess_mode": "livemax"}  # set by the one process running the EMR link
        self.received = Counter(
            "pacsgw_instances_received", "Instances acknowledged to senders (durable in the spool).", ["source"], registry=r
        )
        self.rejected = Counter(
            "pacsgw_instances_rejected", "Instances refused with a failure status, by reason.", ["reason"], registry=r
        )
        self.quarantined = Counter(
            "pacsgw_instances_quarantined", "Instances a rule set aside in the quarantine (acknowledged, not stored).", registry=r
        )
        self.stored = Counter("pacsgw_instances_stored", "Instances stored in the object store and indexed.", registry=r)
        self.duplicates = Counter(
            "pacsgw_instances_duplicate", "Instances received again under a known SOP Instance UID.", registry=r
        )
        self.store_failures = Counter(
            "pacsgw_store_batch_failures", "Spool batches that failed and will be retried.", ["component"], registry=r
        )
        self.store_latency = Histogram(
            "pacsgw_object_store_put_seconds", "Time to write one object to the object store.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.index_latency = Histogram(
            "pacsgw_index_commit_seconds", "Time to commit one batch to the index.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.ack_latency = Histogram(
            "pacsgw_store_ack_seconds", "Time to validate a received instance and make it durable in the spool.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.spool_damaged = Counter(
            "pacsgw_spool_damaged_records",
            "Spool records found damaged on disk (checksum mismatch) and set aside in the spool's quarantine; "
            "the records after them are still filed.",
            registry=r,
        )
        self.spool_backlog = Gauge(
            "pacsgw_spool_backlog_instances", "Instances in the spool not yet stored.", registry=r, **live_sum
        )
        self.spool_backlog_bytes = Gauge(
            "pacsgw_spool_backlog_bytes", "Bytes in the spool not yet stored.", registry=r, **live_sum
        )
        self.associations = Gauge("pacsgw_dicom_associations", "Open DICOM associations.", registry=r, **live_sum)
        self.dicom_waiting = Gauge(
            "pacsgw_dicom_connections_waiting", "Connections to the DICOM SCP waiting for their A-ASSOCIATE-RQ.",
            registry=r, **live_sum,
        )
        self.dicom_refused = Counter(
            "pacsgw_dicom_connections_refused",
            "DICOM connections closed or associations rejected by a limit: peer_limit, waiting_limit, request_timeout, "
            "association_limit, tls_handshake.",
            ["reason"], registry=r,
        )
        self.reports_finalized = Counter(
            "pacsgw_reports_finalized", "Radiology reports signed final (each queued for the EMR link).", registry=r
        )
        self.emr_delivered = Counter(
            "pacsgw_emr_delivered", "Outbox messages delivered to every EMR destination, by kind.", ["kind"], registry=r
        )
        self.emr_failures = Counter(
            "pacsgw_emr_delivery_failures", "Failed deliveries of outbox messages (each retried later), by kind.",
            ["kind"], registry=r,
        )
        self.emr_pending = Gauge(
            "pacsgw_emr_outbox_pending", "Outbox messages not yet delivered to the EMR.", registry=r, **one_process
        )
        self.emr_oldest_pending = Gauge(
            "pacsgw_emr_outbox_oldest_pending_seconds", "Age of the oldest undelivered outbox message (0: none).",
            registry=r, **one_process,
        )
        self.emr_reconciliation = Gauge(
            "pacsgw_emr_reconciliation_open", "Studies waiting in the reconciliation queue for an administrator.",
            registry=r, **one_process,
        )
        self.emr_publication_lag = Histogram(
            "pacsgw_emr_publication_lag_seconds", "From a study becoming stable to its ImagingStudy accepted by the EMR.",
            buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0), registry=r,
        )
        self.hl7_messages = Counter(
            "pacsgw_hl7_messages", "HL7 v2 messages received over MLLP, by type and ACK code (AA, AE, AR).",
            ["type", "ack"], registry=r,
        )
        self.hl7_ack_seconds = Histogram(
            "pacsgw_hl7_ack_seconds", "Time from an HL7 v2 message received to its ACK sent (applied to the index).",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.hl7_refused = Counter(
            "pacsgw_hl7_connections_refused", "HL7 v2 connections closed unread: the peer is not allowed (hl7.allowed_peers).",
            registry=r,
        )
        self.hl7_tls_failed = Counter(
            "pacsgw_hl7_tls_handshakes_failed",
            "MLLP over TLS connections closed in their handshake (no or unknown client certificate, no TLS, timeout).",
            registry=r,
        )
        self.proxy_headers_refused = Counter(
            "pacsgw_proxy_headers_refused",
            "Connections from a trusted proxy (network.trusted_proxies) closed without a valid PROXY header: "
            "malformed, timeout, incomplete; by protocol (dicom, hl7).",
            ["protocol", "reason"], registry=r,
        )
        self.logins_locked = Counter(
            "pacsgw_login_lockouts", "Logins locked after repeated failures, by what was locked (pair: a name from an address; address; account: a name from anywhere).",
            ["scope"], registry=r,
        )

    def watch_spool(self, records: Callable[[], float], size: Callable[[], float]) -> None:
        self.spool_backlog.set_function(records)
        self.spool_backlog_bytes.set_function(size)

    def sample(self) -> None:
        """Write the gauges computed on demand (multiprocess mode; elsewhere they are read when rendered)."""
        for gauge in (self.spool_backlog, self.spool_backlog_bytes, self.dicom_waiting):
            gauge.sample()

    def render(self) -> bytes:
        if not multiprocess():
            return generate_latest(self.registry)
        from prometheus_client.multiprocess import MultiProcessCollector

        self.sample()
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
