"""DIMSE dispatch by service, and the one place where an exception becomes a status.

Each request an association reads is handed, by its command field, to the handler of one :class:`Service`
(C-FIND, C-MOVE and C-GET, MPPS N-CREATE and N-SET). A handler answers its request and returns the final
status; or it raises. :func:`serve` answers what it raised: a named failure (``gateway.dimse.errors``) with the
status the table (``statuses.toml``) lists it under for that service and its reason (or, with an Error ID, the
standard's Error Comment); anything else with the
service's fallback (Processing Failure, Unable to Process) and a fixed comment, logging the exception's type
and where it was raised, never its message (it may quote values). Then the outcome goes to the audit trail.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.dimse import errors, find_scp, mpps_scp, pdu, retrieve_scp
from gateway.dimse.commands import CommandField, n_response
from gateway.dimse.ports import AssociationPort, Message, Outcome
from gateway.dimse.status import fallback, for_error
from storage.index.database import IndexDatabaseError
from storage.index.matching import InvalidQuery

log = logging.getLogger(__name__)

UNABLE_TO_PROCESS = "unable to process"  # the comment of a failure of the gateway's own

Handler = Callable[[AssociationPort, Message, bytes], Awaitable[Outcome]]
Audit = Callable[[AssociationPort, Message, bytes, Outcome], None]


@dataclass(frozen=True)
class Failure:
    """How one exception is answered: the status, the comment sent, the text logged, and how loudly."""

    status: int
    reason: str
    loggable: str
    level: int
    sop_instance: str = ""
    error_id: int | None = None  # Error ID (0000,0903), where the standard pairs one with the status


@dataclass(frozen=True)
class Service:
    """One DIMSE service: its rows in the status table, its handler, what logs call it, how it is audited."""

    name: str  # "find", "retrieve", "mpps": the ``service`` column of statuses.toml
    handle: Handler
    label: Callable[[AssociationPort, Message], str]
    audit: Audit
    n_service: bool = False  # answered with an N- response naming the instance
    in_order: bool = False  # run in the read loop: an N-SET may follow its N-CREATE at once


def _named(exc: BaseException) -> errors.DimseFailure | None:
    """The named failure an exception stands for; None for a failure of the gateway's own."""
    if isinstance(exc, errors.DimseFailure):
        return exc
    if isinstance(exc, InvalidQuery):  # a matching value the index cannot use: the reason names the value's key
        return errors.IdentifierMismatch(str(exc), loggable=exc.loggable)
    if isinstance(exc, IndexDatabaseError):
        return errors.IndexUnavailable("index unavailable", loggable=str(exc))
    return None


def failure(service: str, exc: BaseException) -> Failure:
    """The answer to ``exc`` raised by ``service``: its named status, or the service's fallback."""
    named = _named(exc)
    if named is not None:
        row = for_error(service, [cls.__name__ for cls in type(named).__mro__])
        if row is not None:
            reason = row.error_comment or named.reason  # the standard's Error Comment goes with its Error ID
            return Failure(row.code, reason, named.loggable, named.log_level, named.sop_instance, row.error_id)
        # a failure this service has no status for: answered as one of its own, but named in the log
        return Failure(fallback(service).code, UNABLE_TO_PROCESS, f"{type(named).__name__}: {named.loggable}",
                       logging.ERROR, named.sop_instance)  # fmt: skip
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    return Failure(fallback(service).code, UNABLE_TO_PROCESS, f"{type(exc).__name__}{where}", logging.ERROR)


async def serve(service: Service, assoc: AssociationPort, message: Message, dataset: bytes) -> None:
    """Run one request's handler; whatever it raises, the peer gets a final response, never silence."""
    assert message.command is not None
    try:
        outcome = await service.handle(assoc, message, dataset)
    except ConnectionError:
        outcome = Outcome(fallback(service.name).code)  # the peer went away: no one to answer, and no fault
    except asyncio.CancelledError:  # the association ended under it: the attempt is still on the record
        service.audit(assoc, message, dataset, Outcome(fallback(service.name).code))
        raise
    except Exception as exc:
        answer = failure(service.name, exc)
        verb = "refused" if answer.level < logging.ERROR else "failed"
        log.log(answer.level, "%s from %s %s: %s", service.label(assoc, message), assoc.calling_ae, verb, answer.loggable)
        outcome = Outcome(answer.status, answer.sop_instance)
        if not message.answered:
            try:
                await _answer(service, assoc, message, answer)
            except ConnectionError:
                pass
    service.audit(assoc, message, dataset, outcome)


async def _answer(service: Service, assoc: AssociationPort, message: Message, answer: Failure) -> None:
    if not service.n_service:
        await assoc.respond(message, answer.status, error_comment=answer.reason)
        return
    assert message.command is not None and assoc.negotiated is not None
    with warnings.catch_warnings():  # pydicom's warnings would quote the peer's values copied into it
        warnings.simplefilter("ignore")
        payload = n_response(message.command, answer.status, sop_class=mpps_scp.SOP_CLASS, sop_instance=answer.sop_instance,
                             error_comment=answer.reason, error_id=answer.error_id)  # fmt: skip
    message.answered = True
    await assoc.send(pdu.p_data(message.context_id, payload, command=True, max_pdu=assoc.negotiated.peer_max_pdu))


def _find_label(assoc: AssociationPort, message: Message) -> str:
    return "MWL C-FIND" if find_scp.is_worklist(assoc, message) else "C-FIND"


def _retrieve_label(_assoc: AssociationPort, message: Message) -> str:
    assert message.command is not None
    return "C-MOVE" if int(message.command.CommandField) == CommandField.C_MOVE_RQ else "C-GET"


def _mpps_label(_assoc: AssociationPort, message: Message) -> str:
    assert message.command is not None
    return "MPPS N-CREATE" if int(message.command.CommandField) == CommandField.N_CREATE_RQ else "MPPS N-SET"


FIND = Service("find", find_scp.find, _find_label, find_scp.audit)
RETRIEVE = Service("retrieve", retrieve_scp.retrieve, _retrieve_label, retrieve_scp.audit)
MPPS = Service("mpps", mpps_scp.performed_step, _mpps_label, mpps_scp.audit, n_service=True, in_order=True)

SERVICES: dict[int, Service] = {
    CommandField.C_FIND_RQ: FIND,
    CommandField.C_MOVE_RQ: RETRIEVE,
    CommandField.C_GET_RQ: RETRIEVE,
    CommandField.N_CREATE_RQ: MPPS,
    CommandField.N_SET_RQ: MPPS,
}


def start(service: Service, assoc: AssociationPort, message: Message, dataset: bytes, running: set[asyncio.Task[None]]) -> None:
    """Run a query or retrieve beside the read loop, so that a C-CANCEL can reach it."""
    task = asyncio.create_task(serve(service, assoc, message, dataset))
    running.add(task)
    task.add_done_callback(running.discard)
