"""Received HL7 v2 messages: each checked, applied to the index in order, answered with its ACK.

Synchronous (the listener runs it in a worker thread). Whatever goes wrong,
a message changes nothing and its ACK says why: AR when the message is
refused as such (unparsable, unsupported type, event or version), AE when
its content cannot be applied (a bad field, an unknown patient or order).
No AA is given before the transaction holding the message has committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.emr.hl7 import adt, orders
from gateway.emr.hl7.ack import build_ack
from gateway.emr.hl7.errors import ErrorCode, Hl7Error, location
from gateway.emr.hl7.message import Header, Hl7Message, mute_library_logging
from storage.index.patients import Demographics, PatientConflict
from storage.index.times import utc_now

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2"})
PROCESSING_IDS = frozenset({"P", "T", "D", ""})  # production, training, debugging


@dataclass(frozen=True)
class Handled:
    """What the listener sends back, logs, counts and audits."""

    ack: str
    kind: str  # message type and event, e.g. ADT^A01 ("?" when unreadable)
    control_id: str
    ack_code: str  # AA, AE or AR
    error_code: int | None = None
    merges: tuple[adt.Merge, ...] = ()  # for the audit trail
    patient: tuple[str, str] | None = None  # the patient (ID, issuer) an ADT or an order's PID recorded, for the audit trail


Operation = Callable[[Connection, Hl7Message, Any], Any]
_Ready = tuple[Header, Hl7Message, Operation]  # a message read and checked, waiting to be applied


class _Refused(Exception):
    """A message of a batch applied without savepoints failed: the transaction is undone."""


@contextmanager
def _savepoint(conn: Connection) -> Iterator[None]:
    """What the block changes, undone if it raises. One fixed name, written once: SQLAlchemy's own
    ``begin_nested`` compiles a new numbered statement per call, a tenth of a message's time."""
    conn.exec_driver_sql("SAVEPOINT hl7_message")
    try:
        yield
    except BaseException:
        conn.exec_driver_sql("ROLLBACK TO SAVEPOINT hl7_message")
        conn.exec_driver_sql("RELEASE SAVEPOINT hl7_message")
        raise
    conn.exec_driver_sql("RELEASE SAVEPOINT hl7_message")


class Hl7Handler:
    def __init__(
        self, engine: Engine, *, application: str, facility: str, stations: dict[str, str], zone: ZoneInfo | None = None
    ) -> None:
        self.engine = engine
        self.zone = zone
        self.application = application
        self.facility = facility
        self.stations = stations
        mute_library_logging()

    def handle(self, text: str) -> Handled:
        return self.handle_batch([text])[0]

    def handle_batch(self, texts: Sequence[str]) -> list[Handled]:
        """Each message's answer, in order; the messages are applied as by :meth:`handle_stream`."""
        given = [list(texts)]
        return self.handle_stream(lambda: given.pop() if given else [])

    def handle_stream(self, more: Callable[[], list[str]]) -> list[Handled]:
        """Apply the messages ``more`` gives, then those it gives while they are being applied (a sender
        running ahead), in order in ONE transaction: one durable commit covers them all. Each message's
        answer, in order. A refused message changes nothing and the others still apply: when one is
        refused, the messages are applied again each in its own savepoint (refusals are rare; savepoints cost)."""
        answers: list[Handled | None] = []
        ready: list[_Ready] = []

        def prepare(texts: list[str]) -> list[_Ready]:
            new = []
            for text in texts:
                prepared = self._prepare(text)
                answers.append(prepared if isinstance(prepared, Handled) else None)
                if not isinstance(prepared, Handled):
                    new.append(prepared)
            ready.extend(new)
            return new

        first = prepare(more())
        if ready:
            try:
                try:
                    applied = self._transaction(first, isolated=False, more=lambda: prepare(more()))
                except _Refused:
                    applied = self._transaction(ready, isolated=True)
            except SQLAlchemyError as exc:  # the transaction could not begin or commit: none of them was applied
                log.error("HL7 batch of %d not applied: index error %s", len(ready), type(exc).__name__)
                unavailable = Hl7Error(ErrorCode.INTERNAL_ERROR, "MSH^1", "index unavailable; send again later")
                applied = [self._error(header, unavailable) for header, _msg, _operation in ready]
            results = iter(applied)
            answers = [answer if answer is not None else next(results) for answer in answers]
        return [answer for answer in answers if answer is not None]

    def _transaction(
        self, ready: list[_Ready], *, isolated: bool, more: Callable[[], list[_Ready]] = lambda: []
    ) -> list[Handled]:
        """Apply the messages, then those ``more`` gives until it gives none, in one transaction. Without
        ``isolated``, the first refusal raises _Refused and undoes them all."""
        out = []
        with self.engine.begin() as conn:  # on SQLite, BEGIN IMMEDIATE (storage.index.sqlite_engine): the write lock first
            while ready:
                for header, msg, operation in ready:
                    if isolated:
                        out.append(self._apply(conn, header, msg, operation))
                        continue
                    try:
                        result = operation(conn, msg, utc_now())
                    except Exception as exc:
                        raise _Refused from exc
                    out.append(self._accepted(header, result))
                ready = more()
        return out

    def _prepare(self, text: str) -> Handled | _Ready:
        header: Header | None = None
        try:
            msg = Hl7Message.parse(text)
            header = msg.header()
            return header, msg, self._operation(header)
        except Hl7Error as error:
            return self._error(header, error)
        except Exception as exc:  # python-hl7 on hostile input; its message may quote values
            log.error("HL7 message unreadable: %s", type(exc).__name__)
            return self.unreadable("the message cannot be read")

    def _apply(self, conn: Connection, header: Header, msg: Hl7Message, operation: Operation) -> Handled:
        try:
            with _savepoint(conn):
                result = operation(conn, msg, utc_now())
        except Hl7Error as error:
            return self._error(header, error)
        except PatientConflict:
            where = location("PID", 3)
            return self._error(header, Hl7Error(ErrorCode.DUPLICATE_KEY, where, "the identifiers name two patients"))
        except SQLAlchemyError as exc:
            log.error("HL7 %s %s not applied: index error %s", header.kind, header.control_id, type(exc).__name__)
            return self._error(header, Hl7Error(ErrorCode.INTERNAL_ERROR, "MSH^1", "index unavailable; send again later"))
        except Exception as exc:  # its message may quote values of the message: only its type is logged
            log.error("HL7 %s %s not applied: %s", header.kind, header.control_id, type(exc).__name__)
            return self._error(header, Hl7Error(ErrorCode.INTERNAL_ERROR, "MSH^1", "internal error"))
        return self._accepted(header, result)

    def _accepted(self, header: Header, result: Any) -> Handled:
        merges = tuple(result) if header.kind == f"ADT^{adt.MERGE_EVENT}" else ()
        patient = (result.patient_id, result.issuer) if isinstance(result, Demographics) else None
        return Handled(self._ack("AA", header), header.kind, header.control_id, "AA", None, merges, patient)

    def unreadable(self, why: str) -> Handled:
        """The answer to bytes that are not a message (no MLLP start block, not in the configured encoding)."""
        return self._error(None, Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "MSH^1", why, reject=True))

    def _operation(self, header: Header) -> Operation:
        if header.version not in SUPPORTED_VERSIONS:
            raise Hl7Error(ErrorCode.UNSUPPORTED_VERSION, location("MSH", 12), "HL7 version not supported", reject=True)
        if header.processing_id not in PROCESSING_IDS:
            raise Hl7Error(ErrorCode.UNSUPPORTED_PROCESSING_ID, location("MSH", 11), "processing ID not supported", reject=True)
        kind, trigger = header.message_type, header.trigger
        if kind == "ADT":
            if trigger in adt.DEMOGRAPHIC_EVENTS:
                return adt.record
            if trigger == adt.MERGE_EVENT:
                return adt.merge
        elif kind in ("ORM", "OMI"):
            if (kind, trigger) in (("ORM", "O01"), ("OMI", "O23")):
                imaging = kind == "OMI"
                return lambda conn, msg, now: orders.process(conn, msg, now, imaging=imaging, stations=self.stations, zone=self.zone)
        else:
            raise Hl7Error(
                ErrorCode.UNSUPPORTED_MESSAGE_TYPE, location("MSH", 9), "message type not supported (ADT, ORM, OMI)",
                reject=True,
            )  # fmt: skip
        raise Hl7Error(ErrorCode.UNSUPPORTED_EVENT, location("MSH", 9), "event not supported", reject=True)

    def _ack(self, code: str, header: Header | None, error: Hl7Error | None = None) -> str:
        text = error.text if error else ""
        return build_ack(code, header=header, application=self.application, facility=self.facility, text=text, error=error)

    def _error(self, header: Header | None, error: Hl7Error) -> Handled:
        return Handled(
            self._ack(error.ack_code, header, error), header.kind if header else "?", header.control_id if header else "",
            error.ack_code, int(error.code),
        )  # fmt: skip
