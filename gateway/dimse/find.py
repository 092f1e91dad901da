"""C-FIND SCP: Patient Root and Study Root Query/Retrieve information models (PS3.4 C.4.1, C.6).

An identifier is checked against the model (levels, the unique keys of the
levels above, matching values) and becomes a :class:`HierarchyQuery`; each
match is answered with the return keys the SCU asked for, in its order.
Queries are hierarchical (no relational extended negotiation).
"""

from __future__ import annotations

import asyncio
import io
import logging
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.tag import Tag
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

from storage.index.hierarchy import ATTRIBUTES, PATIENT_COUNTS, UNIQUE_KEYS, HierarchyQuery, Kind, Level, condition
from storage.index.database import IndexDatabase, IndexDatabaseError
from storage.index.matching import InvalidQuery

log = logging.getLogger(__name__)

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
FIND_MODELS = (PATIENT_ROOT_FIND, STUDY_ROOT_FIND)
RESPONSE_CHARSET = "ISO_IR 192"  # the index holds Unicode


class FindStatus(IntEnum):
    SUCCESS = 0x0000
    PENDING = 0xFF00
    PENDING_OPTIONAL_KEYS_UNSUPPORTED = 0xFF01
    CANCELLED = 0xFE00
    OUT_OF_RESOURCES = 0xA700
    IDENTIFIER_MISMATCH = 0xA900
    UNABLE_TO_PROCESS = 0xC000
    NOT_AUTHORIZED = 0x0124


class FindRefused(Exception):
    """A query or retrieve request refused before any match is sent; carries the status to answer."""

    def __init__(self, status: int, reason: str, *, loggable: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason[:64]
        self.loggable = loggable or reason  # for the log: never a value of the query


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
    """The identifier with every value decoded; raises FindRefused (0xC000) when any of it does not decode."""
    syntax = UID(transfer_syntax)
    try:
        with warnings.catch_warnings():  # pydicom's warnings quote the values
            warnings.simplefilter("ignore")
            ds = read_dataset(io.BytesIO(data), is_implicit_VR=syntax.is_implicit_VR, is_little_endian=syntax.is_little_endian)
            _decode_all(ds)
        return ds
    except Exception:  # hostile input raises many kinds of errors
        raise FindRefused(FindStatus.UNABLE_TO_PROCESS, UNDECODABLE) from None


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


def parse_request(model: str, identifier: Dataset, *, limit: int, fuzzy: bool = False) -> FindRequest:
    try:
        level = Level(_single(identifier, "QueryRetrieveLevel").upper())
    except ValueError:
        raise FindRefused(FindStatus.IDENTIFIER_MISMATCH, "QueryRetrieveLevel missing or not a known level") from None
    if model == STUDY_ROOT_FIND and level is Level.PATIENT:
        raise FindRefused(FindStatus.IDENTIFIER_MISMATCH, "Study Root has no PATIENT level")
    # Hierarchical search: the unique keys of the levels above must be given, as single values.
    first = Level.PATIENT if model == PATIENT_ROOT_FIND else Level.STUDY
    for above in list(Level)[first.depth : level.depth]:
        key = UNIQUE_KEYS[above]
        value = _single(identifier, key)
        if not value or "*" in value or "?" in value or "\\" in value:
            raise FindRefused(FindStatus.IDENTIFIER_MISMATCH, f"{key} must be given as a single value at {level.value} level")
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


def validate_query(request: FindRequest) -> None:
    """Build the SQL conditions once, so that a bad matching value is refused before any response."""
    for keyword, value in request.query.matches.items():
        if value.strip("*"):
            try:
                condition(ATTRIBUTES[keyword], value)
            except InvalidQuery as exc:
                raise FindRefused(FindStatus.IDENTIFIER_MISMATCH, str(exc), loggable=exc.loggable) from None


Emit = Callable[[int, bytes], Awaitable[None]]


class FindService:
    """Runs C-FIND requests against the index, in a thread, answering match by match."""

    def __init__(self, index: IndexDatabase, *, ae_title: str, allowed_aets: list[str], max_results: int) -> None:
        self.index = index
        self.ae_title = ae_title
        self.allowed_aets = set(allowed_aets)
        self.max_results = max_results

    async def run(
        self, model: str, identifier: bytes, transfer_syntax: str, *, calling_ae: str, cancel: asyncio.Event, emit: Emit,
        fuzzy: bool = False,
    ) -> tuple[int, str | None]:
        """Send pending responses through ``emit``; return the final status and its error comment.
        ``fuzzy``: fuzzy semantic matching of person names was negotiated for this model."""
        if calling_ae not in self.allowed_aets:
            log.warning("C-FIND from %s refused: calling AE title not allowed to query", calling_ae)
            return FindStatus.NOT_AUTHORIZED, "calling AE title not allowed to query"
        try:
            request = parse_request(model, decode_identifier(identifier, transfer_syntax), limit=self.max_results, fuzzy=fuzzy)
            validate_query(request)
        except FindRefused as refused:
            log.warning("C-FIND from %s refused: %s", calling_ae, refused.loggable)
            return refused.status, refused.reason
        except Exception as exc:  # a value decoded but unusable: the peer's fault, answered, not a traceback
            log.warning("C-FIND from %s refused: %s (%s)", calling_ae, UNDECODABLE, type(exc).__name__)
            return FindStatus.UNABLE_TO_PROCESS, UNDECODABLE
        try:
            rows = await asyncio.to_thread(self.index.search_hierarchy, request.query)
        except IndexDatabaseError as exc:
            log.error("C-FIND from %s failed: %s", calling_ae, exc)
            return FindStatus.OUT_OF_RESOURCES, "index unavailable"
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
        return FindStatus.OUT_OF_RESOURCES, f"more than {max_results} matches; narrow the query"
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
