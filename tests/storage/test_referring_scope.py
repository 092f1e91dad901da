"""A referring physician's scope in the index: patients by Patient ID *and* Issuer of Patient ID."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from storage.index.accounts import AccountStore, AmbiguousPatient, PatientLink, Role
from storage.index.database import IndexDatabase
from storage.index.hierarchy import HierarchyQuery, Level
from storage.index.patients import Demographics, find_patient, merge_patients, record_demographics
from storage.index.schema import user_patients
from storage.index.scope import Scope
from storage.index.times import utc_now
from tests.factory import Patient, ct_series
from tests.storage.conftest import records


def _study(index: IndexDatabase, patient_id: str, issuer: str) -> str:
    series = ct_series(1, size=16, patient=Patient(patient_id=patient_id, citizen_id="", insurance_number=""))
    for ds in series:
        ds.IssuerOfPatientID = issuer
        del ds.OtherPatientIDsSequence
    index.commit(records(series))
    return str(series[0].StudyInstanceUID)


def _visible(index: IndexDatabase, accounts: AccountStore, username: str, **matches: str) -> set[str]:
    user = accounts.user(username)
    assert user is not None
    found = set()
    for level in (Level.STUDY, Level.SERIES, Level.IMAGE):
        rows = index.search_hierarchy(HierarchyQuery(level, dict(matches), scope=Scope(user_pk=user.pk)))
        found |= {r["StudyInstanceUID"] for r in rows}
    return found


@pytest.fixture
def twins(index: IndexDatabase) -> tuple[IndexDatabase, AccountStore, str, str]:
    """MRN-A of BV-CHORAY and MRN-A of OTHER-HOSPITAL: two patients, one ID."""
    ours, theirs = _study(index, "MRN-A", "BV-CHORAY"), _study(index, "MRN-A", "OTHER-HOSPITAL")
    accounts = AccountStore(index.engine)
    accounts.add_user("dr.ref", Role.REFERRING)
    return index, accounts, ours, theirs


def test_a_link_opens_the_patient_of_its_issuer_only(twins) -> None:
    index, accounts, ours, theirs = twins
    assert accounts.link_patient("dr.ref", "MRN-A", "BV-CHORAY") == PatientLink("MRN-A", "BV-CHORAY")
    assert _visible(index, accounts, "dr.ref") == {ours}
    assert _visible(index, accounts, "dr.ref", PatientID="MRN-A") == {ours}
    assert index.count_hierarchy(HierarchyQuery(Level.STUDY, {"StudyInstanceUID": theirs}, scope=Scope(user_pk=accounts.user("dr.ref").pk))) == 0
    [patient] = index.search_hierarchy(HierarchyQuery(Level.PATIENT, {}, scope=Scope(user_pk=accounts.user("dr.ref").pk)))
    assert (patient["PatientID"], patient["IssuerOfPatientID"]) == ("MRN-A", "BV-CHORAY")


def test_linking_an_id_held_under_several_issuers_must_name_one(twins) -> None:
    index, accounts, ours, theirs = twins
    with pytest.raises(AmbiguousPatient, match="under 2 issuers"):
        accounts.link_patient("dr.ref", "MRN-A")
    assert accounts.links(accounts.user("dr.ref")) == ([], [])  # nothing made
    assert _visible(index, accounts, "dr.ref") == set()


def test_without_an_issuer_the_one_the_index_holds_is_named(index: IndexDatabase) -> None:
    only = _study(index, "MRN-ONLY", "BV-CHORAY")
    blank = _study(index, "LOCAL-9", "")
    accounts = AccountStore(index.engine)
    accounts.add_user("dr.ref", Role.REFERRING)
    assert accounts.link_patient("dr.ref", "MRN-ONLY") == PatientLink("MRN-ONLY", "BV-CHORAY")
    assert accounts.link_patient("dr.ref", "LOCAL-9") == PatientLink("LOCAL-9", "")
    _study(index, "MRN-ONLY", "OTHER-HOSPITAL")  # later, another hospital's MRN-ONLY: not opened
    _study(index, "LOCAL-9", "OTHER-HOSPITAL")
    assert _visible(index, accounts, "dr.ref") == {only, blank}


def test_a_link_naming_no_issuer_opens_an_id_only_while_it_is_unambiguous(index: IndexDatabase) -> None:
    accounts = AccountStore(index.engine)
    accounts.add_user("dr.ref", Role.REFERRING)
    assert accounts.link_patient("dr.ref", "MRN-LATER") == PatientLink("MRN-LATER", None)  # not in the index yet
    first = _study(index, "MRN-LATER", "BV-CHORAY")
    assert _visible(index, accounts, "dr.ref") == {first}
    _study(index, "MRN-LATER", "OTHER-HOSPITAL")
    assert _visible(index, accounts, "dr.ref") == set()  # which one was meant? neither, until relinked
    accounts.link_patient("dr.ref", "MRN-LATER", "BV-CHORAY")
    assert _visible(index, accounts, "dr.ref") == {first}
    assert accounts.links(accounts.user("dr.ref"))[0] == [PatientLink("MRN-LATER", "BV-CHORAY")]  # the vague link replaced


def test_an_earlier_releases_link_never_opens_both_patients_of_an_id(twins) -> None:
    index, accounts, ours, theirs = twins
    with index.engine.begin() as conn:  # as the earlier release stored `user link dr.ref MRN-A`
        conn.execute(insert(user_patients).values(user_pk=accounts.user("dr.ref").pk, patient_id="MRN-A"))
    assert _visible(index, accounts, "dr.ref") == set()


def test_a_merge_moves_links_by_id_and_issuer(twins) -> None:
    index, accounts, ours, theirs = twins
    accounts.add_user("dr.theirs", Role.REFERRING)
    accounts.link_patient("dr.ref", "MRN-A", "BV-CHORAY")
    accounts.link_patient("dr.theirs", "MRN-A", "OTHER-HOSPITAL")
    with index.engine.begin() as conn:  # a vague link too, made before the twins: it opened nothing
        conn.execute(insert(user_patients).values(user_pk=accounts.user("dr.theirs").pk, patient_id="MRN-A"))
        survivor = record_demographics(conn, Demographics("MRN-Z", "BV-CHORAY", "Hoàng^Văn Nam"), utc_now())
        merged = find_patient(conn, "MRN-A", "BV-CHORAY")
        assert merged is not None
        merge_patients(conn, survivor, merged, utc_now())
    assert accounts.links(accounts.user("dr.ref"))[0] == [PatientLink("MRN-Z", "BV-CHORAY")]
    assert _visible(index, accounts, "dr.ref") == {ours}
    # The other hospital's MRN-A is now the only one: the vague link is gone rather than opening it unasked.
    assert accounts.links(accounts.user("dr.theirs"))[0] == [PatientLink("MRN-A", "OTHER-HOSPITAL")]
    assert _visible(index, accounts, "dr.theirs") == {theirs}


def test_an_unambiguous_vague_link_follows_a_merge(index: IndexDatabase) -> None:
    accounts = AccountStore(index.engine)
    accounts.add_user("dr.ref", Role.REFERRING)
    accounts.link_patient("dr.ref", "MRN-SOLO")
    study = _study(index, "MRN-SOLO", "BV-CHORAY")
    with index.engine.begin() as conn:
        survivor = record_demographics(conn, Demographics("MRN-Y", "BV-CHORAY", "Lê^Thị Hoa"), utc_now())
        merge_patients(conn, survivor, find_patient(conn, "MRN-SOLO", "BV-CHORAY"), utc_now())
    assert accounts.links(accounts.user("dr.ref"))[0] == [PatientLink("MRN-Y", "BV-CHORAY")]
    assert _visible(index, accounts, "dr.ref") == {study}
