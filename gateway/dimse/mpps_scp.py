"""Answering an MPPS N-CREATE or N-SET on an association (``gateway.dimse.mpps`` does the work).

What the service raises, ``gateway.dimse.dispatch`` answers, naming the instance.
"""

from __future__ import annotations

import warnings

from gateway.dimse import pdu
from gateway.dimse.commands import CommandField, n_response
from gateway.dimse.errors import SopClassNotSupported
from gateway.dimse.mpps import MODALITY_PERFORMED_PROCEDURE_STEP
from gateway.dimse.ports import AssociationPort, Message, Outcome

SOP_CLASS = MODALITY_PERFORMED_PROCEDURE_STEP


async def performed_step(assoc: AssociationPort, message: Message, attributes: bytes) -> Outcome:
    assert message.command is not None and assoc.negotiated is not None
    command = message.command
    context = assoc.negotiated.contexts[message.context_id]
    service = assoc.server.mpps
    if service is None or context.abstract_syntax != SOP_CLASS:
        raise SopClassNotSupported("SOP class not supported")
    if int(command.CommandField) == CommandField.N_CREATE_RQ:
        result = await service.create(command, attributes, context.transfer_syntax, calling_ae=assoc.calling_ae)
    else:
        result = await service.set(command, attributes, context.transfer_syntax, calling_ae=assoc.calling_ae)
    with warnings.catch_warnings():  # pydicom's warnings would quote the peer's values copied into it
        warnings.simplefilter("ignore")
        payload = n_response(command, result.status, sop_class=SOP_CLASS, sop_instance=result.sop_instance,
                             error_comment=result.comment)  # fmt: skip
    message.answered = True
    await assoc.send(pdu.p_data(message.context_id, payload, command=True, max_pdu=assoc.negotiated.peer_max_pdu))
    return Outcome(result.status, result.sop_instance)


def audit(assoc: AssociationPort, message: Message, _attributes: bytes, outcome: Outcome) -> None:
    assert message.command is not None
    operation = "N-CREATE" if int(message.command.CommandField) == CommandField.N_CREATE_RQ else "N-SET"
    assoc.server.audit.record(
        username=assoc.calling_ae, role="dicom", action="performed-step", target=f"MPPS {operation} {outcome.sop_instance}",
        source=assoc.peer, outcome=int(outcome.status),
    )  # fmt: skip
