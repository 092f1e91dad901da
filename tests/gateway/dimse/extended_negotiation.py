"""A C-FIND by pynetdicom with SOP Class Extended Negotiation, for the tests of the options it agrees."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation


def find_negotiated(
    port: int, model: str, identifier: Dataset, offered: bytes | None
) -> tuple[list[int], list[Dataset], bytes | None]:
    """Every status answered, the matches, and the service-class-application-information the gateway answered to
    ``offered`` (None offered: no extended negotiation item; None answered: no reply item)."""
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(model)
    ext_neg = []
    if offered is not None:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = model
        item.service_class_application_information = offered
        ext_neg.append(item)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSGW", ext_neg=ext_neg)
    assert assoc.is_established
    replies = [i for i in assoc.acceptor.user_information if isinstance(i, SOPClassExtendedNegotiation)]
    statuses, found = [], []
    for status, ds in assoc.send_c_find(identifier, model):
        statuses.append(int(status.Status))
        if status.Status in (0xFF00, 0xFF01):
            found.append(ds)
    assoc.release()
    return statuses, found, (bytes(replies[0].service_class_application_information) if replies else None)
