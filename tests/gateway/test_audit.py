"""The audit writer: events gathered and written in batches, none lost when the gateway stops."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.audit import AuditWriter, audit_digest
from storage.index.accounts import AccountStore
from storage.index.database import IndexDatabase


def test_events_gathered_when_the_gateway_stops_are_written(tmp_path: Path) -> None:
    index = IndexDatabase.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
    accounts = AccountStore(index.engine)
    writer = AuditWriter(accounts)

    async def stop_at_once() -> None:
        task = asyncio.create_task(writer.run())
        for n in range(3):
            writer.record(username="CT01", role="dicom", action="query", target=f"C-FIND {n}", source="127.0.0.1", outcome=0)
        await asyncio.sleep(0.02)  # the writer has taken the first event and gathers the rest
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await writer.flush()

    asyncio.run(stop_at_once())
    assert sorted(e["target"] for e in accounts.audit_trail(since=None, username="CT01", limit=10)) == ["C-FIND 0", "C-FIND 1", "C-FIND 2"]
    index.close()


def _writer(tmp_path: Path, key: bytes | None = None) -> tuple[IndexDatabase, AuditWriter]:
    index = IndexDatabase.open(f"sqlite:///{tmp_path / 'index.sqlite'}")
    return index, AuditWriter(AccountStore(index.engine), key)


KEY = b"k" * 32


def test_every_free_text_value_is_a_digest(tmp_path: Path) -> None:
    index, writer = _writer(tmp_path, KEY)
    mrn = "MRN-0001"
    typed = [("PatientID", mrn), ("StudyDescription", mrn), ("ReferringPhysicianName", mrn), ("StudyDate", "19800102"),
             ("AccessionNumber", "ACC-9"), ("Modality", "NGUYEN"), ("StudyInstanceUID", "12345678"), ("limit", "1234567"),
             ("includefield", mrn), ("orderby", mrn), ("fuzzymatching", mrn), ("since", mrn), ("user", mrn), ("state", mrn),
             ("00100020", mrn), ("QueryRetrieveLevel", mrn), ("StudyStatusID", mrn), ("window", mrn)]  # fmt: skip
    for key, value in typed:
        shown = writer.values([(key, value)])
        assert value not in shown and shown == f"{key}={audit_digest(KEY, value)}", (key, shown)
    assert writer.values([(mrn, "x")]) == f"{audit_digest(KEY, mrn)}={audit_digest(KEY, 'x')}"  # an unknown key too
    assert writer.values([("PatientName", "")]) == "PatientName="  # an empty value is no value
    index.close()


def test_values_that_cannot_be_personal_data_stay_readable(tmp_path: Path) -> None:
    index, writer = _writer(tmp_path, KEY)
    kept = [("StudyInstanceUID", "1.2.840.113619.2.1"), ("0020000E", "2.25.1234\\2.25.5678"), ("limit", "100"),
            ("offset", "20"), ("includefield", "PatientName,00100010,all"), ("orderby", "-StudyDate,PatientName"),
            ("fuzzymatching", "true"), ("Modality", "CT"), ("ModalitiesInStudy", "CT\\MR"), ("StudyStatusID", "IN PROGRESS"),
            ("QueryRetrieveLevel", "STUDY"), ("SpecificCharacterSet", "ISO_IR 192"), ("window", "40,400"),
            ("requestType", "WADO"), ("contentType", "image/jpeg"), ("since", "2026-03-01T08:00:00+07:00"), ("state", "open")]  # fmt: skip
    for key, value in kept:
        assert writer.values([(key, value)]) == f"{key}={value}"
    index.close()


def test_path_segments_typed_by_people_are_digests(tmp_path: Path) -> None:
    index, writer = _writer(tmp_path, KEY)
    clear = "/dicom-web/studies/1.2.840.99/series/2.25.7/instances/1.2.3/frames/1,2"
    assert writer.path(clear) == clear
    assert writer.path("/vault/patient/PGWABCDEFGHIJKLMNOPQ") == "/vault/patient/PGWABCDEFGHIJKLMNOPQ"
    assert writer.path("/dicom-web/studies/MRN-0001/metadata") == f"/dicom-web/studies/{audit_digest(KEY, 'MRN-0001')}/metadata"
    assert writer.path("/studies/Nguyen Van An/report") == f"/studies/{audit_digest(KEY, 'Nguyen Van An')}/report"
    index.close()


def test_without_a_secret_the_key_is_kept_in_the_index_for_every_process(tmp_path: Path) -> None:
    index, writer = _writer(tmp_path)
    again = AuditWriter(AccountStore(index.engine))  # another process sharing the index
    shown = writer.values([("PatientID", "MRN-0001")])
    assert "MRN-0001" not in shown and again.values([("PatientID", "MRN-0001")]) == shown
    assert shown == f"PatientID={audit_digest(AccountStore(index.engine).audit_key(), 'MRN-0001')}"
    index.close()
