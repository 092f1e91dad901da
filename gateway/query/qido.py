"""Querying the index for QIDO-RS: who may see what, and re-identification for administrators."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from dicom_rules.vault import PATIENT, VaultSealError
from gateway.query.service import QueryService
from gateway.vault import PseudonymVault
from storage.index.accounts import Role, User
from storage.index.hierarchy import HierarchyQuery
from storage.index.scope import Scope

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of matches (``limit``/``offset`` of the query) and how many there are in all."""

    rows: list[dict[str, Any]]
    total: int


class QidoService:
    """Answers a parsed query within the user's scope, at one level of the information model.

    An administrator's query for one exact patient ID also finds that patient's pseudonymous studies (through the
    vault), and sees them under the original identity; everyone else sees what the index holds."""

    def __init__(self, queries: QueryService, vault: PseudonymVault | None) -> None:
        self.queries = queries
        self.vault = vault

    async def search(self, query: HierarchyQuery, *, user: User, scope: Scope | None) -> Page:
        """One page of matches and their total; raises IndexDatabaseError."""
        reidentified: dict[str, dict[str, str]] = {}
        patient_id = query.matches.get("PatientID", "")
        if user.role is Role.ADMIN and self.vault is not None and patient_id and not set("*?") & set(patient_id):
            reidentified = await asyncio.to_thread(_vault_patients, self.vault, patient_id)
            query = dataclasses.replace(query, patient_pseudonyms=tuple(reidentified))
            log.info("re-identifying query by %s: %d pseudonymous patient(s)", user.username, len(reidentified))
        query = dataclasses.replace(query, scope=scope)
        page = Page(await self.queries.search(query), await self.queries.count(query))
        for row in page.rows:
            original = reidentified.get(row.get("PatientID", ""))
            if original:
                row.update(
                    PatientID=original["PatientID"],
                    IssuerOfPatientID=original["IssuerOfPatientID"],
                    PatientName=original["PatientName"],
                    PatientBirthDate=original["PatientBirthDate"],
                )
        return page


def _vault_patients(vault: PseudonymVault, patient_id: str) -> dict[str, dict[str, str]]:
    found = {}
    for pseudonym in vault.patient_pseudonyms(patient_id):
        try:
            original = vault.reveal(PATIENT, pseudonym)
        except VaultSealError as exc:  # sealed under another secret: not this gateway's to open
            log.warning("vault entry of patient %s does not open: %s", pseudonym, exc)
            continue
        if original is not None:
            found[pseudonym] = original
    return found
