"""Modality Worklist C-FIND SCP (PS3.4 Annex K): scheduled procedure steps for the modalities.

The identifier's top-level keys and the keys of its Scheduled Procedure Step
Sequence item are matched as C-FIND does elsewhere (single value, ``*``/``?``
wildcards, date and time ranges, UID lists; names without case or accents;
PatientID also matching the patient's other IDs). Each scheduled step is
answered with the keys asked for; an empty Scheduled Procedure Step Sequence
(or an empty item) is answered with every attribute of the step the gateway
keeps. Only steps still SCHEDULED are listed.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.tag import Tag
from pydicom.dataset import Dataset

from gateway.dimse.errors import DimseFailure, IdentifierMismatch, IndexUnavailable, NotAuthorized, Undecodable
from gateway.dimse.find import RESPONSE_CHARSET, UNDECODABLE, Emit, answer_matches, decode_identifier
from gateway.dimse.status import FindStatus
from gateway.query.service import QueryService
from storage.index.database import IndexDatabase, IndexDatabaseError
from storage.index.matching import InvalidQuery
from storage.index.worklist import SCHEDULED, WorklistQuery

log = logging.getLogger(__name__)

MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"

# Return keys -> row column: the top level (PS3.4 K.6.1.2.2) and the Scheduled Procedure Step item.
TOP_KEYS = {
    "PatientName": "PatientName",
    "PatientID": "PatientID",
    "IssuerOfPatientID": "IssuerOfPatientID",
    "PatientBirthDate": "PatientBirthDate",
    "PatientSex": "PatientSex",
    "AccessionNumber": "accession_number",
    "ReferringPhysicianName": "referring_physician_name",
    "RequestedProcedureID": "requested_procedure_id",
    "RequestedProcedureDescription": "requested_procedure_description",
    "StudyInstanceUID": "study_uid",
    "PlacerOrderNumberImagingServiceRequest": "placer_order_number",
    "FillerOrderNumberImagingServiceRequest": "filler_order_number",
}
STEP_KEYS = {
    "ScheduledStationAETitle": "station_aet",
    "ScheduledProcedureStepStartDate": "scheduled_date",
    "ScheduledProcedureStepStartTime": "scheduled_time",
    "Modality": "modality",
    "ScheduledPerformingPhysicianName": "performing_physician_name",
    "ScheduledProcedureStepDescription": "sps_description",
    "ScheduledProcedureStepID": "sps_id",
    "ScheduledStationName": "station_name",
    "ScheduledProcedureStepLocation": "location",
    "ScheduledProcedureStepStatus": "",  # always SCHEDULED
}
STEP_SEQUENCE = "ScheduledProcedureStepSequence"
PROTOCOL_SEQUENCE = "ScheduledProtocolCodeSequence"  # in the step item: returned, not matched
CODE_SEQUENCE = "RequestedProcedureCodeSequence"
OTHER_IDS = "OtherPatientIDsSequence"
_IGNORED = frozenset({"SpecificCharacterSet", "QueryRetrieveLevel"})
_TOP_MATCHES = frozenset(TOP_KEYS) - {"RequestedProcedureDescription"}
_STEP_MATCHES = frozenset(STEP_KEYS) - {"ScheduledProcedureStepDescription", "ScheduledProcedureStepStatus"}


@dataclass(frozen=True)
class WorklistRequest:
    query: WorklistQuery
    top_keys: tuple[int, ...]  # tags asked for, top level
    step_keys: tuple[int, ...]  # tags asked for in the step item; () with ``step_asked``: all of them
    step_asked: bool
    status: str  # ScheduledProcedureStepStatus matching value ("" universal)
    unsupported: bool  # some keys asked for are not kept (returned empty)


def _text(element: Any) -> str:
    value = element.value
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _is_known(tag: int) -> bool:
    try:
        dictionary_VR(tag)
    except KeyError:
        return False
    return True


def parse_request(identifier: Dataset, *, limit: int, fuzzy: bool = False) -> WorklistRequest:
    matches: dict[str, str] = {}
    other_ids: list[str] = []
    top: list[int] = []
    step: list[int] = []
    step_asked, status, unsupported = False, "", False
    for element in identifier:
        tag, keyword = int(element.tag), element.keyword
        if keyword in _IGNORED or element.tag.is_private:
            continue
        if not _is_known(tag):
            unsupported = True
            continue
        top.append(tag)
        if keyword == STEP_SEQUENCE:
            step_asked = True
            items = list(element.value or ())
            if len(items) > 1:
                raise IdentifierMismatch("Scheduled Procedure Step Sequence has several items")
            for sub in items[0] if items else ():
                sub_keyword = sub.keyword
                if sub.tag.is_private or not _is_known(int(sub.tag)):
                    unsupported = True
                    continue
                step.append(int(sub.tag))
                if sub_keyword == PROTOCOL_SEQUENCE:
                    continue
                if sub_keyword not in STEP_KEYS:
                    unsupported = True
                elif sub_keyword == "ScheduledProcedureStepStatus":
                    status = _text(sub)
                elif sub_keyword in _STEP_MATCHES and sub.VR != "SQ":
                    matches[sub_keyword] = _text(sub)
        elif keyword == OTHER_IDS:
            other_ids += [str(item.get("PatientID", "")).strip() for item in element.value or () if item.get("PatientID")]
        elif keyword in _TOP_MATCHES:
            matches[keyword] = _text(element)
        elif keyword not in TOP_KEYS and keyword != CODE_SEQUENCE:
            unsupported = True
    query = WorklistQuery(matches, tuple(other_ids), limit=limit + 1, fuzzy_names=fuzzy)
    return WorklistRequest(query, tuple(top), tuple(step), step_asked, status, unsupported)


def _add(ds: Dataset, tag: int, value: Any) -> None:
    vr = dictionary_VR(tag)
    if vr == "SQ":
        ds.add_new(tag, vr, list(value or []))
    else:
        ds.add_new(tag, vr, value if value not in ("", None) else None)


def _code_items(row: dict[str, Any], prefix: str = "procedure") -> list[Dataset]:
    """The row's ``<prefix>_code_*`` as a code sequence item (Requested Procedure, Scheduled Protocol)."""
    value = row[f"{prefix}_code_value"]
    if not value:
        return []
    item = Dataset()
    if len(value) <= 16:
        item.CodeValue = value
    else:
        item.LongCodeValue = value
    item.CodingSchemeDesignator = row[f"{prefix}_code_scheme"]
    item.CodeMeaning = row[f"{prefix}_code_meaning"] or value
    return [item]


def _other_id_items(row: dict[str, Any]) -> list[Dataset]:
    items = []
    for identifier, issuer, id_type in row["other_ids"]:
        item = Dataset()
        item.PatientID = identifier
        item.IssuerOfPatientID = issuer
        item.TypeOfPatientID = id_type or "TEXT"
        items.append(item)
    return items


def _step_item(keys: Iterable[int], row: dict[str, Any]) -> Dataset:
    item = Dataset()
    for tag in sorted(set(keys)):
        keyword = keyword_for_tag(tag)
        column = STEP_KEYS.get(keyword)
        if keyword == PROTOCOL_SEQUENCE:
            value: Any = _code_items(row, "protocol")
        else:
            value = SCHEDULED if keyword == "ScheduledProcedureStepStatus" else row.get(column) if column else None
        _add(item, tag, value)
    return item


_ALL_STEP_KEYS = tuple(int(Tag(k)) for k in (*STEP_KEYS, PROTOCOL_SEQUENCE))


def response_identifier(request: WorklistRequest, row: dict[str, Any]) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = RESPONSE_CHARSET
    for tag in sorted(set(request.top_keys)):
        keyword = keyword_for_tag(tag)
        if keyword == STEP_SEQUENCE:
            value: Any = [_step_item(request.step_keys or _ALL_STEP_KEYS, row)]
        elif keyword == CODE_SEQUENCE:
            value = _code_items(row)
        elif keyword == OTHER_IDS:
            value = _other_id_items(row)
        else:
            column = TOP_KEYS.get(keyword)
            value = row.get(column) if column else None
        _add(ds, tag, value)
    return ds


class WorklistService:
    """Answers MWL C-FIND requests through the query service, step by step (same contract as FindService)."""

    def __init__(self, index: IndexDatabase, *, allowed_aets: list[str], max_results: int) -> None:
        self.queries = QueryService(index)
        self.allowed_aets = set(allowed_aets)
        self.max_results = max_results

    def allows(self, calling_ae: str) -> bool:
        return "*" in self.allowed_aets or calling_ae in self.allowed_aets

    async def run(
        self, model: str, identifier: bytes, transfer_syntax: str, *, calling_ae: str, cancel: asyncio.Event, emit: Emit,
        fuzzy: bool = False,
    ) -> tuple[FindStatus, str | None]:
        if not self.allows(calling_ae):
            raise NotAuthorized("calling AE title not allowed to query the worklist")
        try:
            request = parse_request(decode_identifier(identifier, transfer_syntax), limit=self.max_results, fuzzy=fuzzy)
            self.queries.validate_worklist(request.query)
        except InvalidQuery as exc:
            raise IdentifierMismatch(str(exc), loggable=exc.loggable) from None
        except DimseFailure:
            raise
        except Exception as exc:  # a value decoded but unusable: the peer's fault, answered, not a traceback
            raise Undecodable(UNDECODABLE, loggable=f"{UNDECODABLE} ({type(exc).__name__})") from None
        rows: list[dict[str, Any]] = []
        if not request.status or fnmatch.fnmatchcase(SCHEDULED, request.status.replace("[", "[[]")):  # only steps to do
            try:
                rows = await self.queries.search_worklist(request.query)
            except IndexDatabaseError as exc:
                raise IndexUnavailable("index unavailable", loggable=str(exc)) from None
        status, comment = await answer_matches(
            rows, lambda row: response_identifier(request, row), transfer_syntax,
            emit=emit, cancel=cancel, unsupported=request.unsupported, max_results=self.max_results,
        )  # fmt: skip
        if status is FindStatus.SUCCESS:
            log.info("MWL C-FIND from %s: %d scheduled step(s)", calling_ae, len(rows))
        return status, comment
