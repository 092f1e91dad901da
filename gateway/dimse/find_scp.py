"""Answering a C-FIND on an association: Query/Retrieve (``gateway.dimse.find``) or Modality Worklist
(``gateway.dimse.worklist``), match by match, until the final response or a C-CANCEL.

Refusals are raised as named failures and answered by ``gateway.dimse.dispatch``.
"""

from __future__ import annotations

import asyncio
import warnings

from gateway.dimse import pdu
from gateway.dimse.commands import response
from gateway.dimse.ports import AssociationPort, Message, Outcome
from gateway.dimse.worklist import MODALITY_WORKLIST_FIND


def is_worklist(assoc: AssociationPort, message: Message) -> bool:
    assert assoc.negotiated is not None
    context = assoc.negotiated.contexts[message.context_id]
    return context.abstract_syntax == MODALITY_WORKLIST_FIND and assoc.server.worklist is not None


async def find(assoc: AssociationPort, message: Message, identifier: bytes) -> Outcome:
    """Answer one C-FIND-RQ: a pending response per match, then the final one."""
    assert message.command is not None and assoc.negotiated is not None
    negotiated = assoc.negotiated
    context = negotiated.contexts[message.context_id]
    message_id = int(message.command.MessageID)
    cancel = assoc.cancels[message_id] = asyncio.Event()

    async def emit(status: int, dataset: bytes) -> None:
        assert message.command is not None
        max_pdu = negotiated.peer_max_pdu
        with warnings.catch_warnings():  # pydicom's warnings would quote the peer's values copied into it
            warnings.simplefilter("ignore")
            command = response(message.command, status, with_dataset=True)
        await assoc.send(
            pdu.p_data(message.context_id, command, command=True, max_pdu=max_pdu)
            + pdu.p_data(message.context_id, dataset, command=False, max_pdu=max_pdu)
        )

    worklist = assoc.server.worklist if is_worklist(assoc, message) else None
    status: int
    try:
        if worklist is not None:
            status, comment = await worklist.run(
                context.abstract_syntax, identifier, context.transfer_syntax, calling_ae=assoc.calling_ae,
                cancel=cancel, emit=emit, fuzzy=context.abstract_syntax in negotiated.fuzzy_names,
            )  # fmt: skip
        else:
            status, comment = await assoc.server.find.run(
                context.abstract_syntax, identifier, context.transfer_syntax, calling_ae=assoc.calling_ae,
                cancel=cancel, emit=emit, fuzzy=context.abstract_syntax in negotiated.fuzzy_names,
                relational=context.abstract_syntax in negotiated.relational,
            )  # fmt: skip
        await assoc.respond(message, status, error_comment=comment)
        return Outcome(status)
    finally:
        assoc.cancels.pop(message_id, None)


def audit(assoc: AssociationPort, message: Message, identifier: bytes, outcome: Outcome) -> None:
    assert assoc.negotiated is not None
    context = assoc.negotiated.contexts[message.context_id]
    operation = "C-FIND MWL" if is_worklist(assoc, message) else "C-FIND"
    assoc.audit("query", operation, identifier, context.transfer_syntax, outcome.status)
