"""Delivering final reports as HL7 v2 ORU^R01 (when ``[hl7] outbound_host`` is set), through ``gateway.emr.hl7``.

The message names the patient as the index knows it at delivery (a merge
after signing is followed), with the order's placer and filler numbers; for a
de-identified study, the original patient ID, name, accession number and
study date from the vault. An EMR listener that cannot
be reached (no connection, no ACK in time) pauses this destination: the
reports wait in the outbox, and the next one is not tried until it is due.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from sqlalchemy import Engine

from gateway.emr.errors import DeliveryError
from gateway.emr.hl7.oru import build_oru_r01
from gateway.emr.hl7.sender import Hl7DeliveryError, send_message
from gateway.emr.identity import IdentityUnavailable, study_identity
from gateway.settings import Settings
from gateway.vault import PseudonymVault
from storage.index.outbox import DIAGNOSTIC_REPORT, OutboxItem
from storage.index.study_export import read_study
from storage.index.worklist import order_numbers


def hl7_settings(settings: Settings) -> Any | None:
    """The ``[hl7]`` section when it names an outbound host and port, else None."""
    section = getattr(settings, "hl7", None)
    return section if getattr(section, "outbound_host", "") and getattr(section, "outbound_port", 0) else None


class OruDestination:
    name = "hl7"
    kinds = (DIAGNOSTIC_REPORT,)

    def __init__(
        self, settings: Any, engine: Engine, vault: PseudonymVault | None, *, tls: ssl.SSLContext | None = None
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.vault = vault
        self.tls = tls  # None: plain MLLP (hl7.outbound_tls off)

    async def deliver(self, item: OutboxItem) -> None:
        payload = await self._current(item)
        s = self.settings
        message = build_oru_r01(payload, application=s.application, facility=s.facility, control_id=f"PGW{item.pk}")
        try:
            await send_message(s.outbound_host, s.outbound_port, message, s.outbound_timeout_seconds,
                               tls=self.tls, server_name=s.outbound_server_name if self.tls else "")  # fmt: skip
        except Hl7DeliveryError as exc:  # its reason holds no patient data
            raise DeliveryError(f"hl7: ORU^R01 not accepted: {exc.reason}", unavailable=exc.unavailable) from None

    async def _current(self, item: OutboxItem) -> dict[str, Any]:
        study = await asyncio.to_thread(read_study, self.engine, item.subject)
        if study is None:
            return item.payload
        try:
            identity = await asyncio.to_thread(study_identity, study, self.vault)
        except IdentityUnavailable as exc:
            raise DeliveryError(f"hl7: {exc}", permanent=True) from None
        placer, filler = await asyncio.to_thread(order_numbers, self.engine, item.subject)
        return {
            **item.payload,
            "patient_id": identity.patient.mrn,
            "issuer_of_patient_id": identity.patient.issuer,
            "patient_name": identity.patient.name,
            "accession_number": identity.accession_number,
            "study_date": identity.study_date,
            "placer_order_number": placer,
            "filler_order_number": filler,
        }
