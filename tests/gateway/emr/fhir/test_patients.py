"""Finding a study's EMR Patient: MRN, then citizen ID, then insurance number; exactly one match links, none or
several do not; what was tried is reported without values; patients are never created."""

from __future__ import annotations

from gateway.emr.fhir.patients import IdentifierSystems, candidates, match_patient
from gateway.emr.identity import PatientIds
from tests.gateway.emr.conftest import CITIZEN_SYSTEM, INSURANCE_SYSTEM, MRN_SYSTEM, digits, emr_patient, unique
from tests.gateway.emr.fhir.test_client import with_client
from tests.peers.test_fhir_peer import search

SYSTEMS = IdentifierSystems({"BV-CHORAY": MRN_SYSTEM}, CITIZEN_SYSTEM, INSURANCE_SYSTEM)


def _ids(mrn: str, citizen: str = "", insurance: str = "", issuer: str = "BV-CHORAY") -> PatientIds:
    return PatientIds(mrn, issuer, (citizen,) if citizen else (), (insurance,) if insurance else ())


def test_the_mrn_system_follows_the_issuer() -> None:
    ids = _ids("MRN-1", "079200000001", "DN4790000000001")
    assert [k for k, _, _ in candidates(ids, SYSTEMS)] == ["mrn", "citizen-id", "insurance-number"]
    assert [k for k, _, _ in candidates(_ids("MRN-1", issuer="OTHER"), SYSTEMS)] == []  # no system for that issuer
    anywhere = IdentifierSystems({"*": "urn:oid:9"}, "", "")
    assert candidates(_ids("MRN-1", "079200000001", issuer="OTHER"), anywhere) == [("mrn", "urn:oid:9", "MRN-1")]


def test_matching_in_order(fhir_base: str) -> None:
    mrn, citizen, insurance = unique("MRN"), digits(), "DN" + digits(13)
    full = emr_patient(fhir_base, mrn=mrn, citizen=citizen, insurance=insurance)
    match = with_client(fhir_base, lambda c: match_patient(c, _ids(mrn, citizen, insurance), SYSTEMS))
    assert match.patient_ref == full and match.tried == [{"identifier": "mrn", "system": MRN_SYSTEM, "matches": 1}]

    # The EMR knows this patient by citizen ID only (registered elsewhere): the MRN finds nothing, the CCCD links.
    other_citizen = digits()
    citizen_only = emr_patient(fhir_base, citizen=other_citizen)
    match = with_client(fhir_base, lambda c: match_patient(c, _ids(unique("MRN"), other_citizen), SYSTEMS))
    assert match.patient_ref == citizen_only
    assert [(t["identifier"], t["matches"]) for t in match.tried] == [("mrn", 0), ("citizen-id", 1)]

    # Only the insurance card is known to the EMR.
    card = "HS" + digits(13)
    insured = emr_patient(fhir_base, insurance=card)
    match = with_client(fhir_base, lambda c: match_patient(c, _ids(unique("MRN"), digits(), card), SYSTEMS))
    assert match.patient_ref == insured and [t["matches"] for t in match.tried] == [0, 0, 1]


def test_no_match_or_several_do_not_link_and_nothing_is_created(fhir_base: str) -> None:
    mrn, citizen = unique("MRN"), digits()
    match = with_client(fhir_base, lambda c: match_patient(c, _ids(mrn, citizen), SYSTEMS))
    assert match.patient_ref is None and "no EMR patient" in match.reason
    assert len(match.tried) == 2 and mrn not in str(match.tried) and citizen not in str(match.tried)
    assert search(fhir_base, "Patient", identifier=f"{MRN_SYSTEM}|{mrn}") == []  # never created

    shared = digits()
    emr_patient(fhir_base, citizen=shared)
    emr_patient(fhir_base, citizen=shared)
    match = with_client(fhir_base, lambda c: match_patient(c, _ids(unique("MRN"), shared, "DN" + digits(13)), SYSTEMS))
    assert match.patient_ref is None and match.reason == "several EMR patients carry the study's citizen ID"
    assert match.tried[-1] == {"identifier": "citizen-id", "system": CITIZEN_SYSTEM, "matches": "several"}
    assert len(match.tried) == 2  # stops there: the insurance number is not tried

    match = with_client(fhir_base, lambda c: match_patient(c, PatientIds("", ""), SYSTEMS))
    assert match.patient_ref is None and match.tried == [] and "no identifier" in match.reason


def test_a_match_by_mrn_contradicting_birth_date_or_sex_does_not_link(fhir_base: str) -> None:
    mrn, citizen = unique("MRN"), digits()
    linked = emr_patient(fhir_base, mrn=mrn, citizen=citizen, birthDate="1980-01-02", gender="male")
    same = PatientIds(mrn, "BV-CHORAY", (), (), "19800102", "M")
    assert with_client(fhir_base, lambda c: match_patient(c, same, SYSTEMS)).patient_ref == linked
    unknown = PatientIds(mrn, "BV-CHORAY", (), (), "", "")  # nothing to contradict
    assert with_client(fhir_base, lambda c: match_patient(c, unknown, SYSTEMS)).patient_ref == linked
    typo = PatientIds(mrn, "BV-CHORAY", (), (), "19751130", "F")  # the modality's MRN is someone else's
    match = with_client(fhir_base, lambda c: match_patient(c, typo, SYSTEMS))
    assert match.patient_ref is None and match.reason == "the EMR patient with the study's MRN has another birth date and sex"
    assert match.tried == [{"identifier": "mrn", "system": MRN_SYSTEM, "matches": 1, "differs": "birth date and sex"}]
    # A contradiction stops the search (an administrator decides), even if a citizen ID would match.
    by_citizen = PatientIds(mrn, "BV-CHORAY", (citizen,), (), "19751130", "F")
    match = with_client(fhir_base, lambda c: match_patient(c, by_citizen, SYSTEMS))
    assert match.patient_ref is None and len(match.tried) == 1


def test_identifiers_searched_by_stay_out_of_urls(fhir_base: str) -> None:
    import asyncio

    import aiohttp

    from gateway.emr.fhir.client import FhirClient

    mrn, citizen = unique("MRN"), digits()
    linked = emr_patient(fhir_base, citizen=citizen)
    urls: list[str] = []

    async def on_request_start(_session, _context, params) -> None:  # noqa: ANN001 - aiohttp's trace signature
        urls.append(f"{params.method} {params.url}")

    async def run() -> str | None:
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(on_request_start)
        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            match = await match_patient(FhirClient(session, fhir_base), _ids(mrn, citizen), SYSTEMS)
            return match.patient_ref

    assert asyncio.run(run()) == linked
    assert urls and all(u.startswith("POST ") and u.endswith("/Patient/_search") for u in urls), urls
    assert not any(mrn in u or citizen in u for u in urls)
