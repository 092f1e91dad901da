"""Instance locations kept in memory: served while the index is unchanged, never after an instance changed."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys

from storage.index.accounts import AccountStore, Role
from storage.index.commit_watch import CommitWatch
from storage.index.database import IndexDatabase
from storage.index.instance_locations import InstanceLocations
from tests.factory import ct_series
from tests.storage.conftest import records


def test_kept_rows_survive_other_commits_and_never_an_instance_change(index: IndexDatabase) -> None:
    series = ct_series(3, size=16)
    located = [dataclasses.replace(r, pixel_offset=400, frame_length=512) for r in records(series)]
    index.commit(located)
    study_uid, series_uid = series[0].StudyInstanceUID, series[0].SeriesInstanceUID
    first = series[0].SOPInstanceUID
    watch = CommitWatch(index.engine)
    locations = InstanceLocations(index, watch)
    try:
        rows = locations.load(study_uid, series_uid)
        assert set(rows) == {ds.SOPInstanceUID for ds in series}
        if index.dialect == "postgresql":  # another node may change an instance at any moment: nothing is kept
            assert locations.cached(study_uid, series_uid) is None
            return
        assert locations.cached(study_uid, series_uid) is rows
        accounts = AccountStore(index.engine)  # a commit to other tables (tokens): the kept rows stay valid
        before = watch.version()
        accounts.issue_token(accounts.add_user("svc", Role.AUDITOR, password=""), hours=1)
        assert watch.version() != before and locations.cached(study_uid, series_uid) is rows

        replaced = dataclasses.replace(located[0], object_key="elsewhere/replaced.dcm", checksum="ab" * 32)
        index.commit([replaced])  # the same instance filed again, elsewhere: the kept series is dropped
        assert locations.cached(study_uid, series_uid) is None
        rows = locations.load(study_uid, series_uid)
        assert rows[first]["object_key"] == "elsewhere/replaced.dcm" and rows[first]["checksum"] == "ab" * 32
        assert locations.cached(study_uid, series_uid) is rows

        delete = (  # deleted by another process, behind this one's back
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
            "pk = c.execute('SELECT pk FROM instances WHERE sop_instance_uid = ?', (sys.argv[2],)).fetchone()[0];"
            "[c.execute(f'DELETE FROM {t} WHERE instance_pk = ?', (pk,)) for t in ('instance_pixels', 'instance_metadata')];"
            "c.execute('DELETE FROM instances WHERE pk = ?', (pk,)); c.commit()"
        )
        subprocess.run([sys.executable, "-c", delete, str(index.engine.url.database), first], check=True, timeout=60)
        assert locations.cached(study_uid, series_uid) is None
        assert first not in locations.load(study_uid, series_uid)

        with sqlite3.connect(str(index.engine.url.database)) as conn:  # a change to pixel locations alone
            conn.execute("UPDATE instance_pixels SET data_offset = data_offset + 2")
        assert locations.cached(study_uid, series_uid) is None
        assert {row["data_offset"] for row in locations.load(study_uid, series_uid).values()} == {402}
    finally:
        watch.close()


def test_the_counter_is_installed_once_and_kept_when_the_index_is_opened_again(index: IndexDatabase) -> None:
    if index.dialect != "sqlite":
        return
    index.commit(records(ct_series(2, size=16)))
    watch = CommitWatch(index.engine)
    try:
        counted = watch.changes()
        assert counted is not None and counted > 0
        IndexDatabase.open(str(index.engine.url)).close()  # create_schema again: idempotent
        assert watch.changes() == counted
    finally:
        watch.close()
