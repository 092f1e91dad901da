"""C-FIND SCP: Patient Root and Study Root Query/Retrieve information models (PS3.4 C.4.1, C.6).

An identifier is checked against the model (levels, the unique keys of the
levels above, matching values) and becomes a :class:`HierarchyQuery`; each
match is answered with the return keys the SCU asked for, in its order.
Queries are hierarchical, unless relational queries were agreed by extended negotiation (PS3.4
C.4.1.2.2): then the unique keys of the levels above may be left out, e.g. every instance of a Patient ID.
"""

from __future__ import annotations

import asyncio
import io
import logging
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.tag import Tag
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

from gateway.dimse.errors import DimseFailure, IdentifierMismatch, IndexUnavailable, NotAuthorized, OutOfResources, Undecodable
from gateway.dimse.status import FindStatus
from gateway.query.service import QueryService
from storage.index.database import IndexDatabase, IndexDatabaseError
from storage.index.hierarchy import ATTRIBUTES, PATIENT_COUNTS, UNIQUE_KEYS, HierarchyQuery, Kind, Level
from storage.index.matching import InvalidQuery

log = logging.getLogger(__name__)

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
FIND_MODELS = (PATIENT_ROOT_FIND, STUDY_ROOT_FIND)
RESPONSE_CHARSET = "ISO_IR 192"  # the index holds Unicode


@dataclass(frozen=True)
class FindRequest:
    model: str
    query: HierarchyQuery
    return_keys: tuple[int, ...]  # tags, in the order the SCU sent them
    unsupported: bool  # some requested keys are not known to the index (returned empty)


UNDECODABLE = "identifier cannot be decoded"


def _decode_all(ds: Dataset) -> None:
    """Convert every element now: pydicom converts values lazily, where a bad one would raise far from here."""
    for element in ds:
        if element.VR == "SQ":
            for item in element.value or ():
                _decode_all(item)


def decode_identifier(data: bytes, transfer_syntax: str) -> Dataset:
    """The identifier with every value decoded; raises Undecodable when any of it does not decode."""
    syntax = UID(transfer_syntax)
    try:
        with warnings.catch_warnings():  # pydicom's warnings quote the values
            warnings.simplefilter("ignore")
            ds = read_dataset(io.BytesIO(data), is_implicit_VR=syntax.is_implicit_VR, is_little_endian=syntax.is_little_endian)
            _decode_all(ds)
        return ds
    except Exception:  # hostile input raises many kinds of errors
        raise Undecodable(UNDECODABLE) from None


def encode_identifier(ds: Dataset, transfer_syntax: str) -> bytes:
    syntax = UID(transfer_syntax)
    fp = DicomBytesIO()
    fp.is_little_endian = syntax.is_little_endian
    fp.is_implicit_VR = syntax.is_implicit_VR
    write_dataset(fp, ds)
    return fp.getvalue()


def _single(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def parse_request(
    model: str, identifier: Dataset, *, limit: int, fuzzy: bool = False, relational: bool = False
) -> FindRequest:
    try:
        level = Level(_single(identifier, "QueryRetrieveLevel").upper())
    except ValueError:
        raise IdentifierMismatch("QueryRetrieveLevel missing or not a known level") from None
    if model == STUDY_ROOT_FIND and level is Level.PATIENT:
        raise IdentifierMismatch("Study Root has no PATIENT level")
    # Hierarchical search: the unique keys of the levels above must be given, as single values.
    first = Level.PATIENT if model == PATIENT_ROOT_FIND else Level.STUDY
    for above in [] if relational else list(Level)[first.depth : level.depth]:
        key = UNIQUE_KEYS[above]
        value = _single(identifier, key)
        if not value or "*" in value or "?" in value or "\\" in value:
            raise IdentifierMismatch(f"{key} must be given as a single value at {level.value} level")
    matches: dict[str, str] = {}
    other_ids: list[str] = []
    return_keys: list[int] = []
    unsupported = False
    for element in identifier:
        tag = int(element.tag)
        keyword = keyword_for_tag(tag)
        if keyword in ("QueryRetrieveLevel", "SpecificCharacterSet") or element.tag.is_private:
            continue
        return_keys.append(tag)
        if keyword == "OtherPatientIDsSequence":
            other_ids += [_single(item, "PatientID") for item in element.value or () if _single(item, "PatientID")]
        elif keyword in ATTRIBUTES:
            if ATTRIBUTES[keyword].kind is not Kind.RETURN_ONLY and element.VR != "SQ":
                value = element.value
                matches[keyword] = "\\".join(map(str, value)) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else str(value or "")
        elif keyword not in PATIENT_COUNTS and keyword != "RetrieveAETitle":
            unsupported = True
    query = HierarchyQuery(level, matches, tuple(other_ids), limit=limit + 1, fuzzy_names=fuzzy)
    return FindRequest(model, query, tuple(return_keys), unsupported)


def _element_value(keyword: str, value: Any) -> Any:
    if value is None:
        return None
    if keyword == "ModalitiesInStudy":
        return [m for m in str(value).split("\\") if m] or None
    return value


def response_identifier(request: FindRequest, row: dict[str, Any], retrieve_ae: str) -> Dataset:
    """One match, with the keys the SCU asked for (empty where the index has no value) and the level's unique keys."""
    ds = Dataset()
    ds.SpecificCharacterSet = RESPONSE_CHARSET
    ds.QueryRetrieveLevel = request.query.level.value
    ds.RetrieveAETitle = retrieve_ae
    wanted = set(request.return_keys) | {int(Tag(UNIQUE_KEYS[request.query.level]))}
    for tag in sorted(wanted):
        keyword = keyword_for_tag(tag)
        if keyword in ("RetrieveAETitle",):
            continue
        vr = dictionary_VR(tag)
        if keyword == "OtherPatientIDsSequence":
            ds.add_new(tag, vr, [])
            continue
        value = _element_value(keyword, row.get(keyword))
        if vr in ("US", "UL", "IS") and value is not None:
            value = int(value)
        ds.add_new(tag, vr, value if value not in ("",) else None)
    return ds


def validate_query(queries: QueryService, request: FindRequest) -> None:
    """Refuse a matching value the index cannot use, before any response."""
    try:
        queries.validate(request.query)
    except InvalidQuery as exc:
        raise IdentifierMismatch(str(exc), loggable=exc.loggable) from None


Emit = Callable[[int, bytes], Awaitable[None]]


class FindService:
    """Runs C-FIND requests through the query service, answering match by match."""

    def __init__(self, index: IndexDatabase, *, ae_title: str, allowed_aets: list[str], max_results: int) -> None:
        self.queries = QueryService(index)
        self.ae_title = ae_title
        self.allowed_aets = set(allowed_aets)
        self.max_results = max_results

    async def run(
        self, model: str, identifier: bytes, transfer_syntax: str, *, calling_ae: str, cancel: asyncio.Event, emit: Emit,
        fuzzy: bool = False,
        relational: bool = False,
    ) -> tuple[int, str | None]:
        """Send pending responses through ``emit``; return the final status and its error comment, or raise the
        named failure (``gateway.dimse.errors``) to be answered. ``fuzzy``: fuzzy semantic matching of person names was negotiated for this model;
        ``relational``: relational queries were."""
        if calling_ae not in self.allowed_aets:
            raise NotAuthorized("calling AE title not allowed to query")
        try:
            request = parse_request(
                model, decode_identifier(identifier, transfer_syntax), limit=self.max_results, fuzzy=fuzzy, relational=relational
            )
            validate_query(self.queries, request)
        except DimseFailure:
            raise
        except Exception as exc:  # a value decoded but unusable: the peer's fault, answered, not a traceback
            raise Undecodable(UNDECODABLE, loggable=f"{UNDECODABLE} ({type(exc).__name__})") from None
        try:
            rows = await self.queries.search(request.query)
        except IndexDatabaseError as exc:
            raise IndexUnavailable("index unavailable", loggable=str(exc)) from None
        status, comment = await answer_matches(
            rows, lambda row: response_identifier(request, row, self.ae_title), transfer_syntax,
            emit=emit, cancel=cancel, unsupported=request.unsupported, max_results=self.max_results,
        )  # fmt: skip
        if status is FindStatus.SUCCESS:
            log.info("C-FIND from %s at %s level: %d match(es)", calling_ae, request.query.level.value, len(rows))
        return status, comment


async def answer_matches(
    rows: list[dict[str, Any]],
    identifier_of: Callable[[dict[str, Any]], Dataset],
    transfer_syntax: str,
    *,
    emit: Emit,
    cancel: asyncio.Event,
    unsupported: bool,
    max_results: int,
) -> tuple[FindStatus, str | None]:
    """One pending response per match, stopping at a C-CANCEL; the final status and its comment."""
    if len(rows) > max_results:
        raise OutOfResources(f"more than {max_results} matches; narrow the query")
    pending = FindStatus.PENDING_OPTIONAL_KEYS_UNSUPPORTED if unsupported else FindStatus.PENDING
    for row in rows:
        if cancel.is_set():
            return FindStatus.CANCELLED, None
        await emit(pending, encode_identifier(identifier_of(row), transfer_syntax))
    return FindStatus.SUCCESS, None


def identifier_summary(identifier: bytes, transfer_syntax: str) -> list[tuple[str, str]]:
    """The identifier's non-empty keys and values, for the audit trail (empty when it does not decode)."""
    try:
        ds = decode_identifier(identifier, transfer_syntax)
        return [
            (element.keyword or f"{int(element.tag):08X}", str(element.value))
            for element in ds
            if element.VR != "SQ" and element.value not in (None, "") and not element.tag.is_private
        ]
    except Exception:  # noqa: BLE001 - the request itself is answered with the reason
        return []
