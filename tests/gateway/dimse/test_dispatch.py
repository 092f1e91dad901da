"""The one place exceptions become DIMSE statuses (gateway.dimse.dispatch), and the one status table it reads."""

from __future__ import annotations

import logging
import re

import pytest

from gateway.dimse import dispatch, errors
from gateway.dimse.status import NAMES, SERVICES, CATEGORIES, fallback, table
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
        (errors.OutOfResources("more than 10 instances; retrieve less at once"), 0xA700),
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
        (errors.MayNoLongerBeUpdated("step completed or discontinued"), 0xC310),
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


def test_the_table_is_the_one_place_of_every_status() -> None:
    rows = table()
    assert {row.service for row in rows} == set(SERVICES) and {row.category for row in rows} <= set(CATEGORIES)
    assert all(row.source.startswith("PS3.") for row in rows)
    for service in SERVICES:
        mine = [row for row in rows if row.service == service]
        assert len({row.name for row in mine}) == len(mine) and len({row.code for row in mine}) == len(mine), service
        assert fallback(service).category == "failure"
        # every row has its name in the service's enum, and every name a row
        assert {row.name: row.code for row in mine} == {m.name: int(m) for m in NAMES[service]}, service
    failure_names = {cls.__name__ for cls in errors.NAMED}
    assert {name for row in rows for name in row.errors} <= failure_names
    # every named failure is answered by some service
    assert failure_names <= {name for row in rows for name in row.errors}
