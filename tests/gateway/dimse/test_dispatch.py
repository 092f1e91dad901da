"""The one place exceptions become DIMSE statuses (gateway.dimse.dispatch), and the one status table it reads."""

from __future__ import annotations

import logging
import re

import pytest

from gateway.dimse import dispatch, errors
from pynetdicom import status as peer

from gateway.dimse.status import CATEGORIES, ERROR_IDS, NAMES, PENDING, SERVICES, fallback, table
from storage.index.database import IndexDatabaseError
from storage.index.matching import InvalidQuery

# service -> (a failure its code raises, the status it must be answered with)
NAMED = {
    "find": [
        (errors.NotAuthorized("calling AE title not allowed to query"), 0x0124),
        (errors.IdentifierMismatch("Study Root has no PATIENT level"), 0xA900),
        (errors.Undecodable("identifier cannot be decoded"), 0xC000),
        (errors.OutOfResources("more than 100 matches; narrow the query"), 0xA700),
        (errors.IndexUnavailable("index unavailable"), 0xA700),
    ],
    "retrieve": [
        (errors.NotAuthorized("calling AE title not allowed to retrieve"), 0x0124),
        (errors.UnknownDestination("move destination unknown"), 0xA801),
        (errors.DestinationUnreachable("destination X refused the association or is unreachable"), 0xA702),
        (errors.IdentifierMismatch("no unique key to retrieve by"), 0xA900),
        (errors.Undecodable("identifier cannot be decoded"), 0xC000),
        (errors.OutOfResources("more than 10 instances; retrieve less at once"), 0xA701),
        (errors.IndexUnavailable("index unavailable"), 0xA701),
    ],
    "mpps": [
        (errors.NotAuthorized("calling AE title not allowed"), 0x0124),
        (errors.InvalidAttributeValue("a new step must be IN PROGRESS"), 0x0106),
        (errors.Undecodable("undecodable attribute list"), 0x0110),
        (errors.IndexUnavailable("index unavailable"), 0x0110),
        (errors.DuplicateInstance("step exists already"), 0x0111),
        (errors.NoSuchInstance("no such performed procedure step"), 0x0112),
        (errors.InvalidInstance("invalid SOP Instance UID"), 0x0117),
        (errors.MissingAttribute("Performed Procedure Step Status missing"), 0x0120),
        (errors.SopClassNotSupported("SOP class not supported"), 0x0122),
    ],
}
CASES = [(service, exc, status) for service, cases in NAMED.items() for exc, status in cases]


@pytest.mark.parametrize(("service", "exc", "status"), CASES, ids=[f"{s}-{type(e).__name__}" for s, e, _ in CASES])
def test_a_named_failure_gets_its_status_and_its_reason(service: str, exc: errors.DimseFailure, status: int) -> None:
    answer = dispatch.failure(service, exc)
    assert (answer.status, answer.reason) == (status, str(exc))
    assert answer.level == (logging.ERROR if isinstance(exc, errors.IndexUnavailable) else logging.WARNING)


def test_the_failures_of_mpps_name_the_instance() -> None:
    answer = dispatch.failure("mpps", errors.NoSuchInstance("no such performed procedure step", sop_instance="1.2.3"))
    assert (answer.status, answer.sop_instance) == (0x0112, "1.2.3")


@pytest.mark.parametrize("service", ["find", "retrieve", "mpps"])
def test_an_unknown_exception_is_a_processing_failure_that_quotes_nothing(service: str) -> None:
    def fails() -> None:
        raise KeyError("DOE^JOHN 19800102")  # a message quoting the request's values

    try:
        fails()
    except KeyError as exc:
        answer = dispatch.failure(service, exc)
    assert answer.status == {"find": 0xC000, "retrieve": 0xC000, "mpps": 0x0110}[service]
    assert answer.reason == dispatch.UNABLE_TO_PROCESS and answer.level == logging.ERROR
    assert "DOE" not in answer.loggable and re.fullmatch(r"KeyError at test_dispatch\.py:\d+", answer.loggable)


def test_a_runtime_error_is_no_longer_an_unreachable_destination() -> None:
    assert dispatch.failure("retrieve", RuntimeError("cannot associate")).status == 0xC000
    assert dispatch.failure("retrieve", errors.DestinationUnreachable("cannot associate")).status == 0xA702


def test_errors_of_the_index_are_named_failures() -> None:
    unusable = InvalidQuery("StudyDate: '1980-01-02' is not a date YYYYMMDD")
    answer = dispatch.failure("find", unusable)
    assert (answer.status, answer.loggable) == (0xA900, "invalid StudyDate")  # the log gets the key, not the value
    gone = dispatch.failure("find", IndexDatabaseError("query failed: OperationalError"))
    assert (gone.status, gone.reason, gone.level) == (0xA700, "index unavailable", logging.ERROR)


def test_a_failure_a_service_has_no_status_for_is_its_fallback_named_in_the_log() -> None:
    answer = dispatch.failure("find", errors.UnknownDestination("move destination unknown"))
    assert (answer.status, answer.reason) == (0xC000, dispatch.UNABLE_TO_PROCESS)
    assert answer.loggable.startswith("UnknownDestination")


def test_a_step_that_may_no_longer_be_updated_is_a_processing_failure_with_error_id_a710() -> None:
    # PS3.4 F.7.2.2.4, Table F.7.2-2: Status 0110H, Error ID (0000,0903) A710 and its Error Comment
    answer = dispatch.failure("mpps", errors.MayNoLongerBeUpdated("step completed or discontinued", sop_instance="1.2"))
    assert (answer.status, answer.error_id, answer.sop_instance) == (0x0110, 0xA710, "1.2")
    assert answer.reason == "Performed Procedure Step Object may no longer be updated"
    assert answer.loggable == "step completed or discontinued" and answer.level == logging.WARNING
    assert dispatch.failure("mpps", errors.IndexUnavailable("index unavailable")).error_id is None  # a plain 0110


# The independent source: pynetdicom's status tables (PS3.4 per service class, PS3.7 Annex C), with their
# ranges (A7xx, Cxxx...) written out, and pynetdicom's category names.
PEER_TABLES = {
    "store": {"C-STORE": peer.STORAGE_SERVICE_CLASS_STATUS},
    "find": {"C-FIND": peer.QR_FIND_SERVICE_CLASS_STATUS, "MWL C-FIND": peer.MODALITY_WORKLIST_SERVICE_CLASS_STATUS},
    "retrieve": {"C-MOVE": peer.QR_MOVE_SERVICE_CLASS_STATUS, "C-GET": peer.QR_GET_SERVICE_CLASS_STATUS},
    "mpps": {"N-CREATE/N-SET": peer.PROCEDURE_STEP_STATUS},
    "general": {"C-ECHO and the rest": peer.GENERAL_STATUS},
}
PEER_CATEGORY = {"success": "Success", "pending": "Pending", "cancel": "Cancel", "warning": "Warning", "failure": "Failure"}
MOVE_ONLY = {("retrieve", "UNKNOWN_DESTINATION")}  # A801: Table C.4-2 (C-MOVE) only; a C-GET has no destination
# The ranges whose codes the standard leaves to the SCP, per service (PS3.4 Tables B.2-1, C.4-1, C.4-2, C.4-3, K.4-1)
OPEN_RANGES = {"store": {"A7xx", "A9xx", "Cxxx"}, "find": {"Cxxx"}, "retrieve": {"Cxxx"}, "mpps": set(), "general": set()}


def _in_range(code: int, pattern: str) -> bool:
    return f"{code:04X}"[: len(pattern.rstrip("x"))] == pattern.rstrip("x") and len(pattern) == 4


@pytest.mark.parametrize("row", table(), ids=[f"{row.service}-{row.name}" for row in table()])
def test_every_status_is_the_standards_for_its_service(row) -> None:
    for operation, statuses in PEER_TABLES[row.service].items():
        if operation == "C-GET" and (row.service, row.name) in MOVE_ONLY:
            assert row.code not in statuses  # C-GET has no such status
            continue
        if row.range:  # the gateway's choice inside a range the standard leaves open
            assert row.range in OPEN_RANGES[row.service] and _in_range(row.code, row.range), (row.range, hex(row.code))
        assert row.code in statuses, f"{operation} has no status {row.code:04X}"
        assert statuses[row.code][0] == PEER_CATEGORY[row.category], (operation, hex(row.code), statuses[row.code])
    if row.error_id is not None:  # only where the standard pairs an Error ID with the code (Table F.7.2-2)
        assert (row.service, row.code, row.error_id) == ("mpps", 0x0110, 0xA710)
        assert row.error_comment == "Performed Procedure Step Object may no longer be updated"


def test_the_range_check_catches_a_code_outside_its_range() -> None:
    assert _in_range(0xC001, "Cxxx") and _in_range(0xA7FF, "A7xx") and not _in_range(0xA800, "A7xx")
    # the codes the review found wrong are not the standard's: C310 is no MPPS status, A700 no C-MOVE/C-GET one
    assert 0xC310 not in peer.PROCEDURE_STEP_STATUS and 0xA700 not in peer.QR_MOVE_SERVICE_CLASS_STATUS
    assert 0xA700 not in peer.QR_GET_SERVICE_CLASS_STATUS


def test_the_table_and_the_enums_are_the_same_statuses_both_ways() -> None:
    rows = table()
    assert {row.service for row in rows} == set(SERVICES) and {row.category for row in rows} <= set(CATEGORIES)
    assert all(row.source.startswith("PS3.") for row in rows)
    for service in SERVICES:
        mine = [row for row in rows if row.service == service]
        assert len({row.name for row in mine}) == len(mine), service
        assert len({(row.code, row.error_id) for row in mine}) == len(mine), service
        assert fallback(service).category == "failure" and fallback(service).error_id is None
        # every row is a name of the service's enum with its code, and every name (aliases too) a row
        enum = NAMES[service]
        assert {row.name: row.code for row in mine} == {name: int(m) for name, m in enum.__members__.items()}, service
    assert {(row.service, row.name): row.error_id for row in rows if row.error_id is not None} == ERROR_IDS
    assert {row.code for row in rows if row.category == "pending"} == PENDING
    failure_names = {cls.__name__ for cls in errors.NAMED}
    assert {name for row in rows for name in row.errors} <= failure_names
    # every named failure is answered by some service
    assert failure_names <= {name for row in rows for name in row.errors}
