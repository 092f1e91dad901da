"""Radiology reports as a service: reading them, saving drafts, and signing them final with their delivery queued."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.metrics import GatewayMetrics
from gateway.reporting.templates import templates
from storage.index.accounts import Role, User
from storage.index.database import IndexDatabase
from storage.index.hierarchy import HierarchyQuery, Level
from storage.index.reports import Report, ReportStore
from storage.index.scope import Scope

WRITERS = (Role.ADMIN, Role.RADIOLOGIST)


class NotAWriter(Exception):
    """The user's role may not write reports."""


class ReportingService:
    """Reports of studies, for the protocol adapters (DICOMweb's ``/studies/{study}/report``).

    Administrators and radiologists read drafts and write them; everyone else (referring physicians within their
    scope, share links) reads final reports only: to them a draft does not exist. Signing a report final queues
    its delivery to the EMR (FHIR DiagnosticReport, ORU^R01) in the same transaction, so that a final report
    always has its message."""

    def __init__(self, store: ReportStore, index: IndexDatabase, metrics: GatewayMetrics) -> None:
        self.store = store
        self.index = index
        self.metrics = metrics

    @staticmethod
    def check_writer(user: User) -> None:
        """Raises NotAWriter unless the user may write reports."""
        if user.role not in WRITERS:
            raise NotAWriter(f"the {user.role.value} role may not write reports")

    async def read(self, study_uid: str, *, user: User, scope: Scope | None) -> Report | None:
        """The study's report as the user may see it; None when there is none for them."""
        report = await asyncio.to_thread(self.store.get, study_uid)
        if report is None:
            return None
        if user.role not in WRITERS and (not report.final or not await self._visible(study_uid, scope)):
            return None
        return report

    async def save_draft(self, study_uid: str, *, author: User, findings: str, impression: str, template: str) -> Report:
        """Create or overwrite the draft; raises NotAWriter, NoSuchStudy, ReportFinal."""
        self.check_writer(author)
        return await asyncio.to_thread(
            self.store.save_draft, study_uid, findings=findings, impression=impression, template=template,
            username=author.username, display_name=author.display_name,
        )  # fmt: skip

    async def sign(self, study_uid: str, *, signer: User) -> Report:
        """Sign the draft final and queue its delivery, together; raises NotAWriter, NoReport, ReportFinal, EmptyReport."""
        self.check_writer(signer)
        report = await asyncio.to_thread(
            self.store.finalize, study_uid, username=signer.username, display_name=signer.display_name
        )
        self.metrics.reports_finalized.inc()
        return report

    async def templates(self) -> Any:
        """The report templates by modality (gateway.reporting.templates)."""
        return await asyncio.to_thread(templates)

    async def _visible(self, study_uid: str, scope: Scope | None) -> bool:
        if scope is None:
            return True
        query = HierarchyQuery(Level.STUDY, {"StudyInstanceUID": study_uid}, scope=scope)
        return bool(await asyncio.to_thread(self.index.count_hierarchy, query))
