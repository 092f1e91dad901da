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
