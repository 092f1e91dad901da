"""Which connections and associations the SCP takes on, so that no peer, silent or busy, locks the others out."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from gateway.metrics import GatewayMetrics
from gateway.settings import DicomSettings

log = logging.getLogger(__name__)

ANY_CALLER = "*"
_LOG_EVERY_SECONDS = 10.0


@dataclass(eq=False)
class Connection:
    """One TCP connection to the SCP, from accept to close."""

    peer: str
    drop: Callable[[], None]  # closes the connection at once
    associated: bool = False
    tls: bool = False  # came on the DICOM TLS port (its handshake done)
    certificate: tuple[str, ...] = ()  # the names of the client certificate it showed (CN, DNS SANs)


class Admission:
    """The SCP's limits on connections and associations, kept on the event loop (no locks).

    A connection waits for its A-ASSOCIATE-RQ for at most ``association_request_timeout``
    (the association itself enforces it), and at most ``max_waiting_connections``
    wait at once: a new one makes room by dropping the one that waited longest,
    so that a flood of silent connections cannot keep out a sender that asks at
    once. One peer address holds at most ``max_connections_per_peer`` connections,
    waiting or associated. Only associations count against ``max_associations``;
    when ``allowed_calling_aets`` admits any caller with ``*``, the last
    ``reserved_associations`` of them are kept for the titles it names.
    """

    def __init__(self, settings: DicomSettings, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.associations = 0
        self._waiting: dict[Connection, None] = {}  # in arrival order
        self._per_peer: Counter[str] = Counter()
        self._logged: dict[str, tuple[float, int]] = {}  # refusal kind -> (last logged, refusals since)
        metrics.dicom_waiting.set_function(lambda: len(self._waiting))

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def open(self, peer: str, drop: Callable[[], None]) -> Connection | None:
        """Take on a new connection, or None when its peer already holds its share (the caller closes it)."""
        limit = self.settings.max_connections_per_peer
        if limit and self._per_peer[peer] >= limit:
            self._refused(
                "peer_limit",
                "connection from %s closed: that address holds %d connections (dicom.max_connections_per_peer)",
                peer, limit,
            )  # fmt: skip
            return None
        if len(self._waiting) >= max(1, self.settings.max_waiting_connections):
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            self._refused(
                "waiting_limit",
                "connection from %s closed before its A-ASSOCIATE-RQ: %d connections were waiting "
                "(dicom.max_waiting_connections)",
                oldest.peer, self.settings.max_waiting_connections,
            )  # fmt: skip
            oldest.drop()
        connection = Connection(peer, drop)
        self._waiting[connection] = None
        self._per_peer[peer] += 1
        return connection

    def not_allowed(self, peer: str) -> None:
        """A connection from an address outside ``dicom.allowed_peers``: refused before it takes any place."""
        self._refused("peer_not_allowed", "association from %s refused: address not allowed (dicom.allowed_peers)", peer)

    def handshake_failed(self, connection: Connection, why: str) -> None:
        """A connection to the TLS port whose handshake failed or timed out (no certificate, an untrusted one...)."""
        self._refused("tls_handshake", "DICOM TLS connection from %s closed: handshake failed (%s)", connection.peer, why)

    def requested(self, connection: Connection) -> None:
        """The connection's A-ASSOCIATE-RQ has arrived (or it never will)."""
        self._waiting.pop(connection, None)

    def timed_out(self, connection: Connection) -> None:
        self._refused(
            "request_timeout",
            "connection from %s closed: no A-ASSOCIATE-RQ within %g s (dicom.association_request_timeout)",
            connection.peer, self.settings.association_request_timeout,
        )  # fmt: skip

    def associate(self, connection: Connection, calling_ae: str) -> str | None:
        """Take an association slot for the connection, or say why there is none."""
        limit = self.settings.max_associations
        if self.associations >= limit:
            self._count("association_limit")
            return "too many associations"
        listed = self.settings.allowed_calling_aets
        reserve = min(self.settings.reserved_associations, limit - 1)
        if ANY_CALLER in listed and calling_ae not in listed and self.associations >= limit - reserve:
            self._count("association_limit")
            return "too many associations (the last ones are kept for the calling AE titles listed)"
        connection.associated = True
        self.associations += 1
        self.metrics.associations.inc()
        return None

    def close(self, connection: Connection) -> None:
        self._waiting.pop(connection, None)
        self._per_peer[connection.peer] -= 1
        if self._per_peer[connection.peer] <= 0:
            del self._per_peer[connection.peer]
        if connection.associated:
            connection.associated = False
            self.associations -= 1
            self.metrics.associations.dec()

    def _count(self, kind: str) -> None:
        self.metrics.dicom_refused.labels(kind).inc()

    def _refused(self, kind: str, message: str, *args: object) -> None:
        """Count the refusal; log it, at most once every few seconds per kind (a flood must not flood the log)."""
        self._count(kind)
        now = time.monotonic()
        last, since = self._logged.get(kind, (0.0, 0))
        if last and now - last < _LOG_EVERY_SECONDS:
            self._logged[kind] = (last, since + 1)
            return
        self._logged[kind] = (now, 0)
        if since:
            message += f" ({since} more like it in the last {now - last:.0f} s)"
        log.warning(message, *args)
