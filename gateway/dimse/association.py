"""One association, as acceptor: negotiation, then DIMSE messages until release or abort (PS3.8 section 9.2)."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import struct
import termios
import warnings
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset

from gateway.dimse import dispatch, pdu
from gateway.dimse.admission import ANY_CALLER, Connection
from gateway.dimse.commands import (
    NO_DATASET,
    CommandField,
    StoreCommand,
    decode_command,
    decode_store_command,
    response,
)
from gateway.dimse.negotiation import (
    AcceptedContext,
    CALLING_AE_NOT_RECOGNIZED,
    AssociationRejected,
    Negotiated,
    decode_request,
    loggable,
    negotiate,
)
from gateway.dimse.find import FIND_MODELS, encode_identifier, identifier_summary
from gateway.dimse.part10 import file_meta
from gateway.dimse.ports import Message, ServerPort
from gateway.dimse.retrieve import GET_MODELS, MOVE_MODELS
from gateway.dimse.status import GeneralStatus, StoreStatus, is_pending
from gateway.dimse.worklist import MODALITY_WORKLIST_FIND
from gateway.ingest.service import Source
from storage.uids import is_valid_uid

log = logging.getLogger(__name__)

# A command set is a few hundred bytes; one that keeps growing is an attack.
MAX_COMMAND_BYTES = 65536

# The abstract syntaxes each query or retrieve may come on.
_QUERY_MODELS: dict[int, tuple[str, ...]] = {
    CommandField.C_FIND_RQ: (*FIND_MODELS, MODALITY_WORKLIST_FIND),
    CommandField.C_MOVE_RQ: MOVE_MODELS,
    CommandField.C_GET_RQ: GET_MODELS,
}


class _Abort(Exception):
    """Stop the association with an A-ABORT (provider-initiated, with a reason)."""

    def __init__(self, why: str, reason: int = pdu.REASON_NOT_SPECIFIED) -> None:
        super().__init__(why)
        self.reason = reason


def _quietly(build: Callable[..., bytes], *args: Any, **kwargs: Any) -> bytes:
    """A response built with pydicom's warnings off: they quote the peer's invalid values copied into it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build(*args, **kwargs)


def _operation(field_value: int) -> str:
    """The DIMSE operation of a command field, as logs name it (C-STORE...)."""
    try:
        return CommandField(field_value).name.removesuffix("_RQ").replace("_", "-")
    except ValueError:
        return f"command 0x{field_value:04x}"


class Association:
    """One connection to the SCP, as acceptor, from its A-ASSOCIATE-RQ to release or abort.

    Every wait on the peer is bounded: the request by
    ``dicom.association_request_timeout``, each later PDU and each response the
    peer must read by ``dicom.network_timeout``; every buffer too: PDUs by
    ``dicom.max_pdu_size``, a command set by ``MAX_COMMAND_BYTES``, a message by
    ``dicom.max_message_bytes``.
    """

    def __init__(
        self, server: ServerPort, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: Connection
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.connection = connection
        self.peer = connection.peer
        settings = server.settings
        self._max_message = settings.max_message_bytes
        # 0 offers the peer PDUs of any length; a message bounds them all the same.
        self._max_pdu = settings.max_pdu_size or settings.max_message_bytes + MAX_COMMAND_BYTES + 64
        self.negotiated: Negotiated | None = None
        # Queries run beside the read loop, so that a C-CANCEL can reach them.
        self.cancels: dict[int, asyncio.Event] = {}
        self._operations: set[asyncio.Task[None]] = set()
        # C-GET sub-operations waiting for the peer's C-STORE response, by message ID.
        self.store_responses: dict[int, asyncio.Future[int]] = {}
        self._next_message_id = 1

    def unsent(self) -> int:
        """Bytes sent but not yet taken by the peer: our buffer and the kernel's (Linux), so a slow reader is seen reading."""
        queued = self.writer.transport.get_write_buffer_size()
        sock = self.writer.get_extra_info("socket")
        try:
            return queued + struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except (AttributeError, OSError, ValueError):
            return queued

    def next_message_id(self) -> int:
        """The Message ID for the next request the gateway sends on this association (C-GET sub-operations)."""
        message_id = self._next_message_id
        self._next_message_id = (self._next_message_id % 0xFFFF) + 1
        return message_id

    @property
    def calling_ae(self) -> str:
        return self.negotiated.calling_ae if self.negotiated else ""

    async def run(self) -> None:
        admission = self.server.admission
        try:
            try:
                _, raw = await asyncio.wait_for(
                    pdu.read_pdu(self.reader, self._max_pdu, expect=pdu.A_ASSOCIATE_RQ),
                    self.server.settings.association_request_timeout,
                )
            except TimeoutError:
                admission.timed_out(self.connection)
                return  # the ARTIM timer expired: close the connection, no A-ABORT (PS3.8 9.2, AA-2)
            finally:
                admission.requested(self.connection)
            if not await self._associate(raw):
                return
            try:
                await self._serve()
            finally:
                for task in self._operations:
                    task.cancel()
        except (_Abort, pdu.PDUError) as abort:
            log.warning("association with %s (%s) aborted: %s", self.calling_ae or "?", self.peer, abort)
            self._send_last(pdu.abort(pdu.ABORT_BY_PROVIDER, abort.reason))
        except TimeoutError:
            log.warning("association with %s (%s) aborted: network timeout", self.calling_ae or "?", self.peer)
            self._send_last(pdu.abort())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the peer went away; nothing it sent without a response is lost
        except Exception:  # a fault of the gateway's own: abort rather than leave the peer waiting
            log.exception("association with %s (%s) failed", self.calling_ae or "?", self.peer)
            self._send_last(pdu.abort())
        finally:
            await self._close()

    async def send(self, data: bytes) -> None:
        if self.writer.transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        transport = self.writer.transport
        try:
            self.writer.write(data)
            # The socket is full: wait while the peer reads, however long a large instance takes to go,
            # but not once it has read nothing for network_timeout.
            left = transport.get_write_buffer_size()
            while left:
                try:
                    async with asyncio.timeout(self.server.settings.network_timeout):
                        await self.writer.drain()
                    return
                except TimeoutError:
                    if transport.get_write_buffer_size() >= left:
                        raise
                    left = transport.get_write_buffer_size()
        except TimeoutError:
            log.warning("association with %s (%s) aborted: the peer stopped reading", self.calling_ae or "?", self.peer)
            transport.abort()
            raise ConnectionAbortedError("the peer stopped reading") from None
        except (ConnectionError, RuntimeError):
            pass

    def _send_last(self, data: bytes) -> None:
        """Queue the association's last PDU; closing sends it."""
        if not self.writer.transport.is_closing():
            self.writer.write(data)

    async def _close(self) -> None:
        """Close the connection once what is queued is sent; a peer that does not read it gets the socket closed."""
        transport = self.writer.transport
        self.writer.close()
        if transport.get_write_buffer_size():
            try:
                await asyncio.wait_for(self.writer.wait_closed(), min(10.0, self.server.settings.network_timeout))
            except Exception:
                transport.abort()

    async def _associate(self, raw: bytes | bytearray) -> bool:
        server = self.server
        try:
            request = decode_request(bytes(raw))
            calling = str(request.calling_ae_title).strip()
            listed = server.settings.allowed_calling_aets
            if listed and calling not in listed and ANY_CALLER not in listed:
                raise AssociationRejected("calling AE title not allowed", 0x01, 0x01, 0x03)
            if self.connection.tls and server.ae_binding and not server.ae_binding.allows(
                self.connection.certificate, calling
            ):
                why = "its client certificate may not use it" if self.connection.certificate else "no client certificate"
                raise AssociationRejected(
                    f"calling AE title {loggable(calling, 16)} refused on the TLS port: {why} (dicom_tls.client_aets)",
                    0x01, 0x01, CALLING_AE_NOT_RECOGNIZED,
                )  # fmt: skip
            negotiated = negotiate(request, server.supported_contexts, max_pdu=server.settings.max_pdu_size)
            full = server.admission.associate(self.connection, calling)
            if full is not None:
                raise AssociationRejected(full, 0x02, 0x03, 0x02)  # transient, local limit exceeded
            self.negotiated = negotiated
        except AssociationRejected as rejected:
            log.warning("association from %s refused: %s", self.peer, rejected)
            if rejected.reason == CALLING_AE_NOT_RECOGNIZED and rejected.source == 0x01:
                self._audit_refusal(bytes(raw), rejected)
            await self.send(pdu.associate_rj(rejected.result, rejected.source, rejected.reason))
            return False
        await self.send(self.negotiated.accept_pdu)
        return True

    def _audit_refusal(self, raw: bytes, rejected: AssociationRejected) -> None:
        """A peer refused for who it says it is (its calling AE title, or the certificate it showed for it)."""
        calling = raw[26:42].decode("ascii", "replace").strip() if len(raw) >= 42 else ""
        self.server.audit.record(
            username=loggable(calling, 16), role="dicom", action="associate",
            target=f"A-ASSOCIATE-RJ calling AE title not recognized{' (TLS)' if self.connection.tls else ''}",
            source=self.peer, outcome=rejected.reason,
        )  # fmt: skip

    async def _serve(self) -> None:
        # While a retrieve sends, the peer may rightly say nothing; the sending has timeouts of its own.
        reader = pdu.PDUReader(self.reader, self._max_pdu, self.server.settings.network_timeout, self._busy)
        try:
            await self._serve_pdus(reader)
        finally:
            reader.close()

    def _busy(self) -> bool:
        return bool(self._operations)

    async def _serve_pdus(self, reader: pdu.PDUReader) -> None:
        assert self.negotiated is not None
        contexts = self.negotiated.contexts
        timeout = self.server.settings.network_timeout
        message: Message | None = None
        # The kept fragments of the message's data set, joined once when its last one has come.
        fragments: list[bytes | bytearray | memoryview] = []
        while True:
            pdu_type, raw = await reader.read()
            if pdu_type == pdu.A_RELEASE_RQ:
                if self._operations:  # answer what was asked before releasing
                    await asyncio.wait(self._operations, timeout=timeout)
                await self.send(pdu.release_rp())
                return
            if pdu_type == pdu.A_ABORT:
                return
            if pdu_type != pdu.P_DATA_TF:
                raise _Abort(f"unexpected PDU type 0x{pdu_type:02x}", pdu.REASON_UNEXPECTED_PDU)
            for context_id, control, fragment in pdu.iter_pdvs(raw, 0):
                if context_id not in contexts:
                    raise _Abort("data on a presentation context that was not accepted", pdu.REASON_INVALID_PARAMETER)
                if message is None:
                    message = Message(context_id)
                elif message.context_id != context_id:
                    raise _Abort("fragments of one message on two presentation contexts", pdu.REASON_INVALID_PARAMETER)
                if control & pdu.COMMAND:
                    if message.command is not None:
                        raise _Abort("command fragment after a complete command", pdu.REASON_UNEXPECTED_PDU)
                    message.command_bytes += fragment
                    if len(message.command_bytes) > MAX_COMMAND_BYTES:
                        raise _Abort(f"command set longer than {MAX_COMMAND_BYTES} bytes", pdu.REASON_INVALID_PARAMETER)
                    if control & pdu.LAST_FRAGMENT:
                        if await self._command_complete(message):
                            message = None
                else:
                    if message.command is None:
                        raise _Abort("dataset fragment before its command", pdu.REASON_UNEXPECTED_PDU)
                    message.size += len(fragment)
                    if message.size > self._max_message:
                        message.dataset = None  # freed now, not when the abort has been sent
                        fragments.clear()
                        if int(message.command.CommandField) == CommandField.C_STORE_RQ:
                            self.server.metrics.rejected.labels("message larger than dicom.max_message_bytes").inc()
                        raise _Abort(f"message longer than {self._max_message} bytes (dicom.max_message_bytes)")
                    if message.dataset is not None:
                        fragments.append(fragment)
                    if control & pdu.LAST_FRAGMENT:
                        data = None
                        if message.dataset is not None:
                            fragments[0:0] = (message.dataset,)
                            data = b"".join(fragments)
                            fragments.clear()
                        await self._dataset_complete(message, data)
                        message = None

    async def _command_complete(self, message: Message) -> bool:
        """Handle a complete command; returns True when the message is finished (no dataset follows)."""
        store = decode_store_command(message.command_bytes)
        if store is not None and store.data_set_type != NO_DATASET:
            message.command = store  # the common case, read by hand; its values are checked as below
            self._store_requested(message, store.sop_class, store.sop_instance)
            return False
        try:
            with warnings.catch_warnings():  # pydicom warns, quoting it, about each invalid value
                warnings.simplefilter("ignore")
                command = decode_command(bytes(message.command_bytes))
                for _ in command:  # every element decoded now, while warnings are off
                    pass
            field_value = int(command.CommandField)
            has_dataset = int(command.CommandDataSetType) != NO_DATASET
            # Responses and C-CANCEL-RQ name the message they concern; other requests carry their own ID.
            responding = field_value & 0x8000 or field_value == CommandField.C_CANCEL_RQ
            _ = command.MessageIDBeingRespondedTo if responding else command.MessageID
        except Exception:
            raise _Abort("undecodable DIMSE command", pdu.REASON_INVALID_PARAMETER) from None
        message.command = command
        if field_value == CommandField.C_ECHO_RQ and not has_dataset:
            await self.respond(message, GeneralStatus.SUCCESS)
            return True
        if field_value == CommandField.C_STORE_RQ and has_dataset:
            self._store_requested(
                message, str(command.get("AffectedSOPClassUID", "")), str(command.get("AffectedSOPInstanceUID", ""))
            )
            return False
        if field_value in _QUERY_MODELS and has_dataset:
            context = self.negotiated.contexts[message.context_id]  # type: ignore[union-attr]
            if context.abstract_syntax in _QUERY_MODELS[field_value]:
                message.dataset = bytearray()
            else:
                message.refusal = (GeneralStatus.SOP_CLASS_NOT_SUPPORTED, "operation not on a presentation context for it")
            return False
        if field_value in (CommandField.N_CREATE_RQ, CommandField.N_SET_RQ) and has_dataset:
            message.dataset = bytearray()
            return False
        if field_value == CommandField.C_STORE_RSP:
            waiting = self.store_responses.pop(int(command.get("MessageIDBeingRespondedTo", -1)), None)
            if waiting is not None and not waiting.done():
                waiting.set_result(int(command.get("Status", StoreStatus.CANNOT_UNDERSTAND)))
            return not has_dataset
        if field_value == CommandField.C_CANCEL_RQ:
            cancel = self.cancels.get(int(command.get("MessageIDBeingRespondedTo", -1)))
            if cancel is not None:
                cancel.set()
            return True  # C-CANCEL has no response of its own
        if has_dataset:  # drain the dataset, then refuse
            message.refusal = (GeneralStatus.PROCESSING_FAILURE, "operation not supported")
            return False
        await self.respond(message, GeneralStatus.UNRECOGNIZED_OPERATION, error_comment="operation not supported")
        return True

    def _store_requested(self, message: Message, sop_class: str, sop_instance: str) -> None:
        """Check a C-STORE request's UIDs: keep its data set, after a File Meta group, or refuse it once read."""
        context = self.negotiated.contexts[message.context_id]  # type: ignore[union-attr]
        if not (is_valid_uid(sop_class) and is_valid_uid(sop_instance)):
            message.refusal = (StoreStatus.INVALID_UID, "C-STORE request names an invalid UID")
        elif sop_class != context.abstract_syntax:
            message.refusal = (StoreStatus.DATASET_MISMATCH, "SOP Class differs from the presentation context")
        else:
            message.dataset = bytearray(file_meta(sop_class, sop_instance, context.transfer_syntax, self.calling_ae))

    async def _dataset_complete(self, message: Message, dataset: bytes | None) -> None:
        """Handle a message whose data set has come: ``dataset`` is it whole, None when it was not kept."""
        command = message.command
        assert command is not None
        message.dataset = None
        if message.refusal is not None or dataset is None:
            status, reason = message.refusal or (GeneralStatus.PROCESSING_FAILURE, "operation not supported")
            field_value = CommandField.C_STORE_RQ if type(command) is StoreCommand else int(command.CommandField)
            log.warning("%s from %s (%s) refused: %s", _operation(field_value), self.calling_ae, self.peer, reason)
            if field_value == CommandField.C_STORE_RQ:
                self.server.metrics.rejected.labels(reason).inc()
            await self.respond(message, status, error_comment=reason)
            return
        if type(command) is StoreCommand:
            sop_class, sop_instance = command.sop_class, command.sop_instance
        else:
            service = dispatch.SERVICES.get(int(command.CommandField))
            if service is not None and service.in_order:
                await dispatch.serve(service, self, message, dataset)
                return
            if service is not None:
                dispatch.start(service, self, message, dataset, self._operations)
                return
            sop_class, sop_instance = str(command.AffectedSOPClassUID), str(command.AffectedSOPInstanceUID)
        source = Source("dimse", self.calling_ae, self.peer, sop_class, sop_instance)
        outcome = await self.server.ingest.accept(dataset, source)
        await self.respond(message, outcome.status, error_comment=outcome.reason, offending_element=outcome.offending_tag)

    def audit(self, action: str, operation: str, identifier: bytes, transfer_syntax: str, status: int) -> None:
        pairs = identifier_summary(identifier, transfer_syntax)
        target = f"{operation} " + self.server.audit.values(pairs)
        self.server.audit.record(
            username=self.calling_ae, role="dicom", action=action, target=target, source=self.peer, outcome=int(status)
        )

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
    ) -> None:
        assert message.command is not None and self.negotiated is not None
        max_pdu = self.negotiated.peer_max_pdu
        message.answered = not is_pending(status)
        payload = _quietly(
            response, message.command, status, error_comment=error_comment, offending_element=offending_element,
            extra=extra, with_dataset=bool(failed_uids),
        )  # fmt: skip
        data = pdu.p_data(message.context_id, payload, command=True, max_pdu=max_pdu)
        if failed_uids and context is not None:
            identifier = Dataset()
            identifier.FailedSOPInstanceUIDList = failed_uids
            data += pdu.p_data(message.context_id, encode_identifier(identifier, context.transfer_syntax), command=False, max_pdu=max_pdu)
        await self.send(data)
