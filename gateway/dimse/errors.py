"""Named failures of DIMSE services. A service raises one; ``gateway.dimse.dispatch`` answers it with the status the
table (``statuses.toml``) lists it under for that service, and the reason as Error Comment.

The reason is sent to the peer: it names what is wrong, never a value of the request (those go, if at all, to
``loggable``, which the log gets instead, and only when it quotes none either).
"""

from __future__ import annotations

import logging


class DimseFailure(Exception):
    """A request the gateway answers with a failure status: the service's row that lists this class (or a base)."""

    log_level = logging.WARNING  # a refusal of the peer's request; failures of the gateway's own log errors

    def __init__(self, reason: str, *, loggable: str | None = None, sop_instance: str = "") -> None:
        super().__init__(reason)
        self.reason = reason[:64]  # Error Comment is LO
        self.loggable = loggable or reason
        self.sop_instance = sop_instance  # the N- services answer with the instance concerned


class NotAuthorized(DimseFailure):
    """The calling AE title may not use this service."""


class Undecodable(DimseFailure):
    """The identifier or attribute list does not decode, or a value of it is unusable."""


class IdentifierMismatch(DimseFailure):
    """The identifier decodes but does not fit the information model (level, unique keys, matching values)."""


class OutOfResources(DimseFailure):
    """The request needs more than the gateway gives one request (too many matches)."""


class IndexUnavailable(OutOfResources):
    """The index could not answer: the request may succeed later."""

    log_level = logging.ERROR


class UnknownDestination(DimseFailure):
    """C-MOVE to an AE title the gateway has no address for."""


class DestinationUnreachable(DimseFailure):
    """The C-MOVE destination refused the association or could not be reached."""


class SopClassNotSupported(DimseFailure):
    """The operation came on a presentation context whose SOP class does not serve it."""


class InvalidAttributeValue(DimseFailure):
    pass


class MissingAttribute(DimseFailure):
    pass


class InvalidInstance(DimseFailure):
    """The SOP Instance UID given is not a valid UID."""


class DuplicateInstance(DimseFailure):
    pass


class NoSuchInstance(DimseFailure):
    pass


class MayNoLongerBeUpdated(DimseFailure):
    """MPPS: the step is completed or discontinued."""


NAMED: tuple[type[DimseFailure], ...] = (
    NotAuthorized, Undecodable, IdentifierMismatch, OutOfResources, IndexUnavailable, UnknownDestination,
    DestinationUnreachable, SopClassNotSupported, InvalidAttributeValue, MissingAttribute, InvalidInstance,
    DuplicateInstance, NoSuchInstance, MayNoLongerBeUpdated,
)  # fmt: skip
