"""The index's commit watch: it changes with any commit by any other connection, and only then."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from storage.index.accounts import AccountStore, Role
from storage.index.commit_watch import CommitWatch
from storage.index.database import IndexDatabase


def test_the_version_moves_with_commits_from_this_process_and_others(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    index = IndexDatabase.open(url)
    watch = CommitWatch(index.engine)
    try:
        before = watch.version()
        assert before is not None and watch.version() == before  # nothing committed: the same
        accounts = AccountStore(index.engine)
        accounts.issue_token(accounts.add_user("svc", Role.AUDITOR, password=""), hours=1)
        after = watch.version()
        assert after != before
        revoke = (
            "from storage.index.database import IndexDatabase; from storage.index.accounts import AccountStore;"
            f"AccountStore(IndexDatabase.open({url!r}).engine).revoke_tokens('svc')"
        )
        subprocess.run([sys.executable, "-c", revoke], check=True, timeout=60)
        assert watch.version() != after  # another process's commit is seen too
    finally:
        watch.close()
        index.close()


def test_postgresql_has_no_watch(index: IndexDatabase) -> None:
    watch = CommitWatch(index.engine)
    if index.dialect == "postgresql":
        assert watch.version() is None  # every request looks its token up there
    else:
        assert watch.version() is not None
    watch.close()
