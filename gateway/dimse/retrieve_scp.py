"""Answering a C-MOVE or C-GET on an association: listing the instances, driving the sub-operations, the responses.

``gateway.dimse.retrieve`` knows what to send and counts the outcomes; this
module speaks for the association: it opens the move destination (C-MOVE) or
sends each instance back as a C-STORE on the requesting association (C-GET),
and answers with pending responses and one final response; what it raises, ``gateway.dimse.dispatch`` answers.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.dimse import pdu
from gateway.dimse.commands import CommandField, store_request
from gateway.dimse.ports import AssociationPort, Message, Outcome
from gateway.dimse.retrieve import Progress, Target
from gateway.dimse.status import RetrieveStatus
from gateway.dimse.transcode import UNCOMPRESSED, dataset_bytes

log = logging.getLogger(__name__)


def counts(progress: Progress) -> dict[str, int]:
    return {
        "NumberOfRemainingSuboperations": progress.remaining,
        "NumberOfCompletedSuboperations": progress.completed,
        "NumberOfFailedSuboperations": progress.failed,
        "NumberOfWarningSuboperations": progress.warning,
    }


async def retrieve(assoc: AssociationPort, message: Message, identifier: bytes) -> Outcome:
    """Answer one C-MOVE-RQ or C-GET-RQ: every sub-operation, then the final response with the counts.
    Refusals (unknown destination, one that cannot be reached...) are raised, answered by ``gateway.dimse.dispatch``."""
    assert message.command is not None and assoc.negotiated is not None
    command = message.command
    context = assoc.negotiated.contexts[message.context_id]
    is_move = int(command.CommandField) == CommandField.C_MOVE_RQ
    message_id = int(command.MessageID)
    cancel = assoc.cancels[message_id] = asyncio.Event()
    service = assoc.server.retrieve
    mover = None
    try:
        targets = await service.targets(context.abstract_syntax, identifier, context.transfer_syntax, assoc.calling_ae)
        if is_move:
            mover = service.move_association(str(command.get("MoveDestination", "")).strip(), targets)
            if targets:
                await asyncio.to_thread(mover.open)
            send = lambda target, stored: asyncio.to_thread(mover.send, target, stored)  # noqa: E731
        else:
            send = lambda target, stored: get_sub_operation(assoc, target, stored)  # noqa: E731

        async def emit(progress: Progress) -> None:
            await assoc.respond(message, RetrieveStatus.PENDING, extra=counts(progress))

        progress, cancelled = await service.send_all(targets, send, emit, cancel)
        status = progress.final_status(cancelled)
        log.info(
            "%s from %s: %d completed, %d failed, %d warning%s",
            "C-MOVE" if is_move else "C-GET", assoc.calling_ae, progress.completed, progress.failed,
            progress.warning, " (cancelled)" if cancelled else "",
        )  # fmt: skip
        await assoc.respond(message, status, extra=counts(progress), failed_uids=progress.failed_uids, context=context)
        return Outcome(status)
    finally:
        assoc.cancels.pop(message_id, None)
        if mover is not None:
            await asyncio.to_thread(mover.close)


def audit(assoc: AssociationPort, message: Message, identifier: bytes, outcome: Outcome) -> None:
    assert message.command is not None and assoc.negotiated is not None
    command = message.command
    context = assoc.negotiated.contexts[message.context_id]
    is_move = int(command.CommandField) == CommandField.C_MOVE_RQ
    operation = f"C-MOVE to {command.get('MoveDestination', '')}".strip() if is_move else "C-GET"
    assoc.audit("retrieve", operation, identifier, context.transfer_syntax, outcome.status)


async def get_sub_operation(assoc: AssociationPort, target: Target, stored: bytes) -> int:
    """Send one instance back on the requesting association (C-GET) and wait for the peer's C-STORE response."""
    assert assoc.negotiated is not None
    contexts = assoc.negotiated.contexts
    candidates = {cid: cx for cid, cx in contexts.items() if cx.abstract_syntax == target.sop_class_uid}
    if not candidates:
        raise ValueError(f"no presentation context accepted for {target.sop_class_uid}")
    same = [cid for cid, cx in candidates.items() if cx.transfer_syntax == target.transfer_syntax_uid]
    plain = [cid for cid, cx in candidates.items() if cx.transfer_syntax in UNCOMPRESSED]
    if not (same or plain):
        raise ValueError(f"the peer accepted no transfer syntax {target.sop_class_uid} can be sent in")
    context_id = (same or plain)[0]
    wanted = candidates[context_id].transfer_syntax
    dataset = await asyncio.to_thread(dataset_bytes, stored, target.transfer_syntax_uid, wanted)
    message_id = assoc.next_message_id()
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    assoc.store_responses[message_id] = answer
    max_pdu = assoc.negotiated.peer_max_pdu
    request = store_request(message_id, target.sop_class_uid, target.sop_instance_uid)
    try:
        await assoc.send(
            pdu.p_data(context_id, request, command=True, max_pdu=max_pdu)
            + pdu.p_data(context_id, dataset, command=False, max_pdu=max_pdu)
        )
        left = assoc.unsent()
        while True:  # the response comes once the peer has read it all: wait while it is still reading
            try:
                return await asyncio.wait_for(asyncio.shield(answer), assoc.server.settings.network_timeout)
            except TimeoutError:
                if not 0 < assoc.unsent() < left:
                    raise
                left = assoc.unsent()
    finally:
        assoc.store_responses.pop(message_id, None)
