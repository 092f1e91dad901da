"""The query service: what the protocol adapters ask of the index, whichever protocol asked.

C-FIND (Query/Retrieve and Modality Worklist), the instance lists of C-MOVE and C-GET, and QIDO-RS call
this; the SQL behind it is in ``storage.index.study_query`` and ``storage.index.worklist_query``. Queries
run in a thread, off the event loop. Errors: ``InvalidQuery`` (a matching value that cannot be used, raised
before any query runs) and ``IndexDatabaseError`` (the index cannot answer now).
"""

from __future__ import annotations

import asyncio
from typing import Any

from storage.index.database import IndexDatabase
from storage.index.hierarchy import HierarchyQuery
from storage.index.study_query import StudyQueries
from storage.index.worklist import WorklistQuery
from storage.index.worklist_query import WorklistQueries


class QueryService:
    """Hierarchy and worklist queries of one index, for DIMSE and DICOMweb alike."""

    def __init__(self, index: IndexDatabase) -> None:
        self.studies = StudyQueries(index.engine)
        self.scheduled = WorklistQueries(index.engine)

    def check(self, keyword: str, value: str) -> None:
        """Raise InvalidQuery when ``value`` cannot match the hierarchy attribute ``keyword``."""
        self.studies.check(keyword, value)

    def validate(self, query: HierarchyQuery) -> None:
        self.studies.validate(query)

    async def search(self, query: HierarchyQuery) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.studies.search, query)

    async def count(self, query: HierarchyQuery) -> int:
        return await asyncio.to_thread(self.studies.count, query)

    def validate_worklist(self, query: WorklistQuery) -> None:
        self.scheduled.validate(query)

    async def search_worklist(self, query: WorklistQuery) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.scheduled.search, query)
