"""How a delivery to an EMR destination failed, in words fit for logs and the admin API (never patient data)."""

from __future__ import annotations


class DeliveryError(Exception):
    """A destination did not take a message.

    ``permanent``: it refused what was sent (e.g. HTTP 400) and the same
    message will be refused again; it is still retried, at the longest
    interval, since the cause may be fixed on the other side.
    ``unavailable``: the destination could not be reached or failed itself
    (connection, timeout, HTTP 5xx); other messages for it wait too.
    """

    def __init__(self, message: str, *, permanent: bool = False, unavailable: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.unavailable = unavailable


class Parked(Exception):
    """The message waits for an administrator (the study is in the reconciliation queue)."""

    def __init__(self, message: str, reconciliation_id: int) -> None:
        super().__init__(message)
        self.reconciliation_id = reconciliation_id
