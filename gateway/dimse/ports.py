"""What an association and the DIMSE services it dispatches to need of each other, as narrow protocols.

``association`` is given a :class:`ServerPort` (the ``DicomServer``) and never imports ``scp``; the service
handlers (``find_scp``, ``retrieve_scp``, ``mpps_scp``) get an :class:`AssociationPort` and never import
``association``. So the modules depend one way: scp -> association -> dispatch -> handlers -> ports.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from pydicom.dataset import Dataset

if TYPE_CHECKING:  # types only: none of these import the association or the server
    from pynetdicom.presentation import PresentationContext

    from gateway.audit import AuditWriter
    from gateway.dimse.admission import Admission
    from gateway.dimse.find import FindService
    from gateway.dimse.mpps import MppsService
    from gateway.dimse.negotiation import AcceptedContext, Negotiated
    from gateway.dimse.retrieve import RetrieveService
    from gateway.dimse.tls_accept import AeBinding
    from gateway.dimse.worklist import WorklistService
    from gateway.ingest.service import IngestService
    from gateway.metrics import GatewayMetrics
    from gateway.settings import DicomSettings


@dataclass
class Message:
    """A DIMSE message being reassembled from its fragments."""

    context_id: int
    command_bytes: bytearray = field(default_factory=bytearray)
    command: Dataset | None = None
    dataset: bytearray | None = None
    refusal: tuple[int, str] | None = None  # status and reason, answered once its data set is read
    size: int = 0  # dataset bytes received, kept or not
    answered: bool = False  # its final response has been sent


@dataclass(frozen=True)
class Outcome:
    """The final status a request was answered with (and, for the N- services, the instance concerned)."""

    status: int
    sop_instance: str = ""


class ServerPort(Protocol):
    """What an association uses of the server that accepted it."""

    settings: DicomSettings
    admission: Admission
    metrics: GatewayMetrics
    supported_contexts: list[PresentationContext]
    find: FindService
    retrieve: RetrieveService
    worklist: WorklistService | None
    mpps: MppsService | None
    audit: AuditWriter
    ingest: IngestService  # C-STORE datasets are offered to it
    ae_binding: AeBinding  # on the TLS port: the calling AE titles each client certificate may use


class AssociationPort(Protocol):
    """What a service handler uses of the association its request came on."""

    server: ServerPort
    peer: str
    negotiated: Negotiated | None
    cancels: dict[int, asyncio.Event]
    store_responses: dict[int, asyncio.Future[int]]

    @property
    def calling_ae(self) -> str: ...

    async def send(self, data: bytes) -> None: ...

    def unsent(self) -> int: ...

    def next_message_id(self) -> int: ...

    def audit(self, action: str, operation: str, identifier: bytes, transfer_syntax: str, status: int) -> None: ...

    async def respond(
        self,
        message: Message,
        status: int,
        *,
        error_comment: str | None = None,
        offending_element: int | None = None,
        extra: dict[str, int] | None = None,
        failed_uids: list[str] | None = None,
        context: AcceptedContext | None = None,
    ) -> None: ...
