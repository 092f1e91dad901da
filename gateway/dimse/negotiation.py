"""Association negotiation as acceptor, on pynetdicom's PDU codecs and presentation context rules."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
    SOPClassExtendedNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from gateway.dimse.pdu import PDUError
from gateway.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
# C-FIND models whose SOP Class Extended Negotiation can ask for fuzzy semantic matching of person names:
# byte 3 of the service-class-application-information (PS3.4 C.5.1.1.2 Query/Retrieve, K.5.1.1.2 worklist).
FUZZY_NAME_MODELS = frozenset(
    {"1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.2.1", "1.2.840.10008.5.1.4.31"}
)
_FUZZY_BYTE = 2
# Q/R C-FIND models that can agree relational queries: byte 1 (PS3.4 C.5.1.1.2); the worklist has no such byte.
RELATIONAL_MODELS = frozenset({"1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.2.1"})
_RELATIONAL_BYTE = 0


class AssociationRejected(Exception):
    """The request is refused; carries the A-ASSOCIATE-RJ result, source and reason (PS3.8 9.3.4)."""

    def __init__(self, why: str, result: int, source: int, reason: int) -> None:
        super().__init__(why)
        self.result, self.source, self.reason = result, source, reason


@dataclass(frozen=True)
class AcceptedContext:
    abstract_syntax: str
    transfer_syntax: str


@dataclass(frozen=True)
class Negotiated:
    calling_ae: str
    called_ae: str
    peer_max_pdu: int
    contexts: dict[int, AcceptedContext]
    accept_pdu: bytes
    fuzzy_names: frozenset[str] = frozenset()  # abstract syntaxes with fuzzy person-name matching agreed
    relational: frozenset[str] = frozenset()  # Q/R C-FIND models with relational queries agreed


def _extended_negotiation(
    request: A_ASSOCIATE, accepted: dict[int, AcceptedContext]
) -> tuple[list[SOPClassExtendedNegotiation], frozenset[str], frozenset[str]]:
    """Replies to SOP Class Extended Negotiation: relational queries (Q/R C-FIND) and fuzzy semantic matching
    of person names are agreed for the C-FIND models that ask for them; every other option is declined (0),
    the reply as long as the offer. The models with each option agreed come back with the replies."""
    models = {cx.abstract_syntax for cx in accepted.values()} & FUZZY_NAME_MODELS
    replies, fuzzy, relational = [], set(), set()
    for item in request.user_information:
        if not isinstance(item, SOPClassExtendedNegotiation) or str(item.sop_class_uid) not in models:
            continue
        offered = bytes(item.service_class_application_information or b"")
        answer = bytearray(len(offered))
        if len(offered) > _FUZZY_BYTE and offered[_FUZZY_BYTE] == 1:
            answer[_FUZZY_BYTE] = 1
            fuzzy.add(str(item.sop_class_uid))
        if str(item.sop_class_uid) in RELATIONAL_MODELS and offered[:1] == b"\x01":
            answer[_RELATIONAL_BYTE] = 1
            relational.add(str(item.sop_class_uid))
        reply = SOPClassExtendedNegotiation()
        reply.sop_class_uid = item.sop_class_uid
        reply.service_class_application_information = bytes(answer)
        replies.append(reply)
    return replies, frozenset(fuzzy), frozenset(relational)


# PDU header, protocol version, reserved, called and calling AE titles, reserved (PS3.8 table 9-11).
_FIXED_FIELDS = 74
_CALLED_AE, _CALLING_AE = slice(10, 26), slice(26, 42)
# A-ASSOCIATE-RJ reasons, source service-user (PS3.8 table 9-21).
CALLING_AE_NOT_RECOGNIZED = 0x03
CALLED_AE_NOT_RECOGNIZED = 0x07


class _Mute(logging.Filter):
    """Drops the records of the thread that is decoding a peer's request."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "on", False)


_MUTE = _Mute()
# pynetdicom's codecs log each malformed field at ERROR (with a traceback for
# undecodable bytes), pydicom warns about each invalid UID.
_CODEC_LOGGERS = ("pynetdicom.utils", "pynetdicom._validators", "pynetdicom.pdu", "pynetdicom.pdu_items",
                  "pynetdicom.pdu_primitives", "pynetdicom.presentation", "pydicom")  # fmt: skip


@contextmanager
def _quiet(what: str) -> Iterator[None]:
    """Decode a peer's bytes with the codecs silent; any failure becomes one PDUError naming it."""
    for name in _CODEC_LOGGERS:
        logger = logging.getLogger(name)
        if _MUTE not in logger.filters:
            logger.addFilter(_MUTE)
    _MUTE.local.on = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except (PDUError, AssociationRejected):
        raise
    except Exception as exc:  # pynetdicom raises assorted errors on malformed items
        raise PDUError(f"malformed {what} ({type(exc).__name__}: {loggable(str(exc))})") from None
    finally:
        _MUTE.local.on = False


def loggable(text: str, limit: int = 100) -> str:
    """A peer's text fit for one log line: control and non-ASCII characters escaped, cut to ``limit``."""
    escaped = text.encode("ascii", "backslashreplace").decode("ascii")
    escaped = "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in escaped)
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


def _check_title(field: bytes, which: str, reason: int) -> None:
    """AE titles are 1 to 16 characters of the Default Character Repertoire, no backslash (PS3.5 6.2, PS3.8 9.3.2)."""
    title = field.strip(b" ")
    if not title or any(byte < 0x20 or byte > 0x7E or byte == 0x5C for byte in title):
        raise AssociationRejected(
            f"{which} AE title '{loggable(title.decode('latin-1'), 40)}' is not in the default character repertoire"
            if title else f"{which} AE title is empty",
            0x01, 0x01, reason,
        )  # fmt: skip


def decode_request(pdu: bytes) -> A_ASSOCIATE:
    if len(pdu) < _FIXED_FIELDS:
        raise PDUError("A-ASSOCIATE-RQ shorter than its fixed fields")
    _check_title(pdu[_CALLED_AE], "called", CALLED_AE_NOT_RECOGNIZED)
    _check_title(pdu[_CALLING_AE], "calling", CALLING_AE_NOT_RECOGNIZED)
    rq = A_ASSOCIATE_RQ()
    with _quiet("A-ASSOCIATE-RQ"):
        rq.decode(pdu)
        primitive = rq.to_primitive()
    if rq.protocol_version != 0x0001:
        raise AssociationRejected("protocol version not supported", 0x01, 0x02, 0x02)
    if str(primitive.application_context_name) != APPLICATION_CONTEXT:
        raise AssociationRejected("application context not supported", 0x01, 0x01, 0x02)
    return primitive


def negotiate(
    request: A_ASSOCIATE, supported: list[PresentationContext], *, max_pdu: int
) -> Negotiated:
    with _quiet("A-ASSOCIATE-RQ"):
        return _negotiate(request, supported, max_pdu=max_pdu)


def _negotiate(request: A_ASSOCIATE, supported: list[PresentationContext], *, max_pdu: int) -> Negotiated:
    roles = {
        item.sop_class_uid: (item.scu_role, item.scp_role)
        for item in request.user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.sop_class_uid is not None
    }
    results, role_replies = negotiate_as_acceptor(request.presentation_context_definition_list, supported, roles)
    accepted = {
        cx.context_id: AcceptedContext(str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
        for cx in results
        if cx.result == 0x00 and cx.context_id is not None
    }
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(APPLICATION_CONTEXT)
    primitive.calling_ae_title = request.calling_ae_title
    primitive.called_ae_title = request.called_ae_title
    primitive.result = 0x00
    primitive.result_source = 0x01
    primitive.presentation_context_definition_results_list = results
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = max_pdu
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = UID(IMPLEMENTATION_CLASS_UID)
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION
    extended, fuzzy, relational = _extended_negotiation(request, accepted)
    primitive.user_information = [max_length, implementation, version, *role_replies, *extended]
    ac = A_ASSOCIATE_AC()
    ac.from_primitive(primitive)
    return Negotiated(
        calling_ae=str(request.calling_ae_title).strip(),
        called_ae=str(request.called_ae_title).strip(),
        peer_max_pdu=int(request.maximum_length_received or 0),
        contexts=accepted,
        accept_pdu=ac.encode(),
        fuzzy_names=fuzzy,
        relational=relational,
    )
