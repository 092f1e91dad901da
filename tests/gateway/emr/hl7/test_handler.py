"""The handler on its own index: every message, however mangled, gets an ACK, and a refused one changes nothing."""

from __future__ import annotations

import random
from pathlib import Path

from sqlalchemy import func, select

from gateway.emr.hl7.handler import Hl7Handler
from storage.index.database import IndexDatabase
from storage.index.schema import patient_identifiers, patients, worklist_items
from tests.gateway.emr.hl7.messages import Order, Person, a40, adt, omi, orm


def _counts(index: IndexDatabase) -> tuple[int, int, int]:
    with index.engine.connect() as conn:
        return tuple(conn.execute(select(func.count()).select_from(t)).scalar_one() for t in (patients, patient_identifiers, worklist_items))  # type: ignore[return-value]


def test_mangled_messages_are_always_answered_and_refusals_change_nothing(tmp_path: Path) -> None:
    index = IndexDatabase.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
    handler = Hl7Handler(index.engine, application="PACSGW", facility="RAD", stations={"CT": "CT01"})
    person = Person()
    originals = [
        adt("A01", person), adt("A08", person), a40(person, "MRN-X"), orm("NW", person, Order("P1", "A1")),
        omi("NW", person, Order("P2", "A2", study_uid="1.2.3")), orm("CA", person, Order("P1", "A1")),
    ]  # fmt: skip
    rng = random.Random(7)
    codes = set()
    for _ in range(400):
        text = list(rng.choice(originals))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(text))
            action = rng.random()
            if action < 0.4:
                del text[at]
            elif action < 0.8:
                text.insert(at, rng.choice("|^~\\&\r0123456789AZ\"é"))
            else:
                text[at:at] = rng.choice(["|", "^^^", "~~", "\\X41\\", "\\", "\r\r", '""'])
        before = _counts(index)
        handled = handler.handle("".join(text))
        codes.add(handled.ack_code)
        assert handled.ack.startswith("MSH|^~\\&|PACSGW|RAD|") and f"\rMSA|{handled.ack_code}|" in handled.ack
        if handled.ack_code != "AA":
            assert _counts(index) == before and "\rERR|" in handled.ack
    assert codes == {"AA", "AE", "AR"}
    index.close()


def _rows(index: IndexDatabase) -> list[list[tuple]]:
    """Every patient, identifier and order of the index, without times and generated keys."""
    tables = [
        (patients, ["patient_id", "issuer", "patient_name", "birth_date", "sex"]),
        (patient_identifiers, ["identifier", "issuer", "id_type"]),
        (worklist_items, ["order_key", "sps_id", "accession_number", "status", "study_uid", "scheduled_date", "station_aet"]),
    ]
    with index.engine.connect() as conn:
        return [sorted(tuple(row) for row in conn.execute(select(*(t.c[c] for c in columns)))) for t, columns in tables]


def test_a_batch_applies_in_order_and_undoes_only_the_refused_message(index: IndexDatabase) -> None:
    handler = Hl7Handler(index.engine, application="PACSGW", facility="RAD", stations={"CT": "CT01"})
    lan, binh = Person(mrn="MRN-LAN", given="Thị Lan"), Person(mrn="MRN-BINH", given="Văn Bình", citizen="079203000202")
    # One ORM: a new order for Bình (a new patient), then the cancellation of an order nobody knows.
    two_orders = orm("NW", binh, Order("P-BINH", "A-BINH"), cid="B-2")
    two_orders += orm("CA", None, Order("P-NOSUCH", "A-NOSUCH")).split("\r", 1)[1]
    batch = [
        adt("A01", lan, cid="B-1"),
        two_orders,
        "not HL7",
        orm("NW", lan, Order("P-LAN", "A-LAN"), cid="B-4"),
        adt("A08", Person(mrn="MRN-LAN", given="Thị Lan Anh"), cid="B-5"),
    ]
    handled = handler.handle_batch(batch)
    assert [(h.ack_code, h.control_id) for h in handled] == [("AA", "B-1"), ("AE", "B-2"), ("AR", ""), ("AA", "B-4"), ("AA", "B-5")]
    people, _, orders = _rows(index)
    assert [p[:3] for p in people] == [("MRN-LAN", "BV-CHORAY", "Nguyễn^Thị Lan Anh")]  # Bình's patient was undone with his order
    assert [o[2] for o in orders] == ["A-LAN"]


def test_an_order_without_its_own_obr_never_reads_another_orders(index: IndexDatabase) -> None:
    handler = Hl7Handler(index.engine, application="PACSGW", facility="RAD", stations={"CT": "CT01"})
    assert handler.handle(orm("NW", Person(), Order("P1", "A1"))).ack_code == "AA"
    # A second order group, ORC-2 and OBR both missing: it names no order (AE), not the first order's P1.
    text = orm("NW", Person(), Order("P2", "A2")) + "ORC|CA\r"
    handled = handler.handle(text)
    assert handled.ack_code == "AE" and "ORC^2^2" in handled.ack
    people, _, orders = _rows(index)
    assert sorted(o[2] for o in orders) == ["A1"] and [o[3] for o in orders] == ["SCHEDULED"]


def test_an_order_number_of_another_patient_is_refused(index: IndexDatabase) -> None:
    handler = Hl7Handler(index.engine, application="PACSGW", facility="RAD", stations={"CT": "CT01"})
    lan, binh = Person(mrn="MRN-LAN", given="Thị Lan"), Person(mrn="MRN-BINH", given="Văn Bình", citizen="079203000202")
    assert handler.handle(orm("NW", lan, Order("P-SAME", "A-LAN"))).ack_code == "AA"
    assert handler.handle(orm("NW", lan, Order("P-SAME", "A-LAN"))).ack_code == "AA"  # sent again: the same
    refused = handler.handle(orm("NW", binh, Order("P-SAME", "A-BINH")))
    assert refused.ack_code == "AE" and refused.error_code == 205 and "ORC^1^2" in refused.ack
    people, _, orders = _rows(index)
    assert [o[2] for o in orders] == ["A-LAN"] and [p[0] for p in people] == ["MRN-LAN"]


def test_the_protocol_to_run_is_kept_for_the_worklist(index: IndexDatabase) -> None:
    handler = Hl7Handler(index.engine, application="PACSGW", facility="RAD", stations={"CT": "CT01"})
    assert handler.handle(orm("NW", Person(), Order("P-PR", "A-PR", protocol="PR-7^Phác đồ 7^99LOCAL"))).ack_code == "AA"
    assert handler.handle(omi("NW", Person(), Order("P-PR2", "A-PR2"))).ack_code == "AA"  # IPC-6 P1^Protocol một^L
    w = worklist_items.c
    with index.engine.connect() as conn:
        rows = conn.execute(select(w.accession_number, w.protocol_code_value, w.protocol_code_scheme, w.protocol_code_meaning).order_by(w.pk)).all()
    assert [tuple(r) for r in rows] == [("A-PR", "PR-7", "99LOCAL", "Phác đồ 7"), ("A-PR2", "P1", "L", "Protocol một")]


def test_person_information_outside_a_visit_is_recorded(index: IndexDatabase) -> None:
    handler = Hl7Handler(index.engine, application="PACSGW", facility="RAD", stations={"CT": "CT01"})
    codes = [handler.handle(adt(event, Person(mrn="MRN-HIS", given=f"Văn {event}"))).ack_code for event in ("A28", "A31", "A05")]
    assert codes == ["AA", "AA", "AA"]
    people, _, _ = _rows(index)
    assert [p[:3] for p in people] == [("MRN-HIS", "BV-CHORAY", "Nguyễn^Văn A05")]


def test_batches_change_the_index_exactly_as_messages_one_by_one(tmp_path: Path) -> None:
    people = [Person(mrn=f"MRN-{i}", given=f"Văn {i}", citizen=f"07920300{i:04d}") for i in range(6)]
    rng = random.Random(11)
    messages = []
    for i in range(240):
        p = rng.choice(people)
        kind = rng.random()
        if kind < 0.3:
            messages.append(adt(rng.choice(["A01", "A04", "A08"]), Person(**{**p.__dict__, "given": f"Văn {i}"})))
        elif kind < 0.6:
            messages.append(orm("NW", p, Order(f"P{rng.randrange(40)}", f"A{i}", station=rng.choice(["", "CT"]))))
        elif kind < 0.75:
            messages.append(orm("CA", None, Order(f"P{rng.randrange(40)}", "")))  # known or not: AA or AE
        elif kind < 0.85:
            messages.append(a40(p, rng.choice(people).mrn))  # merging a patient into itself or a gone one: AE
        else:
            messages.append(rng.choice(["junk", adt("A01", p).replace("PID|", "PID|x|", 1)[:-20]]))
    one_by_one = IndexDatabase.open(f"sqlite:///{tmp_path / 'single.sqlite'}")
    batched = IndexDatabase.open(f"sqlite:///{tmp_path / 'batched.sqlite'}")
    single = Hl7Handler(one_by_one.engine, application="PACSGW", facility="RAD", stations={"CT": "CT01"})
    grouped = Hl7Handler(batched.engine, application="PACSGW", facility="RAD", stations={"CT": "CT01"})
    codes = [single.handle(text).ack_code for text in messages]
    in_batches = []
    at = 0
    while at < len(messages):
        size = rng.randint(1, 40)
        in_batches += [h.ack_code for h in grouped.handle_batch(messages[at : at + size])]
        at += size
    assert in_batches == codes and {"AA", "AE", "AR"} <= set(codes)
    assert _rows(batched) == _rows(one_by_one)
    one_by_one.close()
    batched.close()
