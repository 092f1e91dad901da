"""The audit writer: events gathered and written in batches, none lost when the gateway stops."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
UUID_UID = "2.25.329800735698586629295641978511506172918"  # a UUID as a UID (PS3.5 B.2)


def test_every_free_text_value_is_a_digest(tmp_path: Path) -> None:
    index, writer = _writer(tmp_path, KEY)
    mrn = "MRN-0001"
    typed = [("PatientID", mrn), ("StudyDescription", mrn), ("ReferringPhysicianName", mrn), ("StudyDate", "19800102"),
             ("AccessionNumber", "ACC-9"), ("Modality", "NGUYEN"), ("StudyInstanceUID", "12345678"), ("limit", "1234567"),
             ("includefield", mrn), ("orderby", mrn), ("fuzzymatching", mrn), ("since", mrn), ("user", mrn), ("state", mrn),
             ("00100020", mrn), ("QueryRetrieveLevel", mrn), ("StudyStatusID", mrn), ("window", mrn),
             ("StudyInstanceUID", "1.12.1985"), ("SeriesInstanceUID", "2.10.1985"), ("0020000D", "2.25.1985"),
             ("SOPInstanceUID", "1.2.3"), ("studyUID", "2.25.123456789012")]  # fmt: skip  (dates and numbers, not UIDs)
    for key, value in typed:
        shown = writer.values([(key, value)])
        assert value not in shown and shown == f"{key}={audit_digest(KEY, value)}", (key, shown)
    assert writer.values([(mrn, "x")]) == f"{audit_digest(KEY, mrn)}={audit_digest(KEY, 'x')}"  # an unknown key too
    assert writer.values([("PatientName", "")]) == "PatientName="  # an empty value is no value
    index.close()


def test_values_that_cannot_be_personal_data_stay_readable(tmp_path: Path) -> None:
    index, writer = _writer(tmp_path, KEY)
    kept = [("StudyInstanceUID", "1.2.840.113619.2.1"), ("0020000E", f"{UUID_UID}\\1.3.6.1.4.1.5962.1"), ("limit", "100"),
            ("offset", "20"), ("includefield", "PatientName,00100010,all"), ("orderby", "-StudyDate,PatientName"),
            ("fuzzymatching", "true"), ("Modality", "CT"), ("ModalitiesInStudy", "CT\\MR"), ("StudyStatusID", "IN PROGRESS"),
            ("QueryRetrieveLevel", "STUDY"), ("SpecificCharacterSet", "ISO_IR 192"), ("window", "40,400"),
            ("requestType", "WADO"), ("contentType", "image/jpeg"), ("since", "2026-03-01T08:00:00+07:00"), ("state", "open")]  # fmt: skip
    for key, value in kept:
        assert writer.values([(key, value)]) == f"{key}={value}"
    index.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    from tests.gateway_process import GatewayProcess

    gw = GatewayProcess(tmp_path_factory.mktemp("audit") / "gw", {})
    gw.start()
    yield gw
    gw.kill()


def test_path_segments_are_kept_by_what_the_route_expects_there(gateway) -> None:
    """A segment is kept when it has the form its route parameter takes (a UID where a UID goes, a frame list
    where frames go...), not when it merely looks like some parameter's value: a patient number typed where a UID
    goes, or a dotted date, is a digest, wherever it stands."""
    gw = gateway
    token = gw.add_user("dr.typist", "admin")
    study, series, instance = "1.2.840.113619.2.55.3", UUID_UID, "1.3.6.1.4.1.5962.1.1"
    digest = lambda value: _audit_digest(gw, value)  # noqa: E731
    asked = {
        f"/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/1,2": None,
        f"/dicom-web/studies/{study}/series/{series}/instances/{instance}/bulkdata/7FE00010": None,
        "/vault/patient/PGWABCDEFGHIJKLMNOPQ": None,
        "/vault/patient/004512": f"/vault/patient/{digest('004512')}",
        "/dicom-web/studies/123456": f"/dicom-web/studies/{digest('123456')}",
        "/dicom-web/studies/1.12.1985/metadata": f"/dicom-web/studies/{digest('1.12.1985')}/metadata",
        f"/dicom-web/studies/{study}/series/2.10.1985/rendered": f"/dicom-web/studies/{study}/series/{digest('2.10.1985')}/rendered",
        f"/dicom-web/studies/{study}/series/{series}/instances/004512/frames/1":
            f"/dicom-web/studies/{study}/series/{series}/instances/{digest('004512')}/frames/1",
        f"/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/004512":
            f"/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{digest('004512')}",
        "/dicom-web/studies/MRN-0001/metadata": f"/dicom-web/studies/{digest('MRN-0001')}/metadata",
        "/studies/Nguyen Van An/report": f"/studies/{digest('Nguyen Van An')}/report",
        "/dicom-web/studies?StudyInstanceUID=1.12.1985&limit=5": f"/dicom-web/studies?StudyInstanceUID={digest('1.12.1985')}&limit=5",
        "/dicom-web/studies/1.2.3.4/004512/metadata": f"/dicom-web/studies/{digest('1.2.3.4')}/{digest('004512')}/metadata",  # no route
    }  # fmt: skip
    for path in asked:
        gw.get(path.replace(" ", "%20"), {"Authorization": f"Bearer {token}"}, auth=False)
    for path in ("/shares/004512", "/shares/77"):
        assert gw.send("DELETE", path, headers={"Authorization": f"Bearer {token}"}, auth=False)[0] == 404
    asked |= {"/shares/004512": f"/shares/{digest('004512')}", "/shares/77": None}
    events = gw.audit_events(lambda trail: len(trail) == len(asked), "user=dr.typist")
    assert sorted(e["target"] for e in events) == sorted(shown or path for path, shown in asked.items())
    assert not any(text in json.dumps(events) for text in ("4512", "1985", "MRN-0001", "Nguyen"))


def _audit_digest(gw, value: str) -> str:
    """``pacs-gateway user audit-digest VALUE`` on the gateway's index, as an auditor looking for a value runs it."""
    command = [str(Path(sys.executable).parent / "pacs-gateway"), "user", "audit-digest", value]
    done = subprocess.run(command, env={**os.environ, **gw._environment()}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_without_a_secret_the_key_is_kept_in_the_index_for_every_process(tmp_path: Path) -> None:
    index, writer = _writer(tmp_path)
    again = AuditWriter(AccountStore(index.engine))  # another process sharing the index
    shown = writer.values([("PatientID", "MRN-0001")])
    assert "MRN-0001" not in shown and again.values([("PatientID", "MRN-0001")]) == shown
    assert shown == f"PatientID={audit_digest(AccountStore(index.engine).audit_key(), 'MRN-0001')}"
    index.close()
