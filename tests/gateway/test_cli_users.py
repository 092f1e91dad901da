"""``pacs-gateway user`` as an administrator runs it: the account store's password policy, tokens' lifetimes."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.index.accounts import AccountStore, token_digest
from storage.index.database import IndexDatabase
from storage.index.schema import tokens

COMMAND = Path(sys.executable).parent / "pacs-gateway"  # the console script, as installed


def user(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACSGW_")}
    env["PACSGW_DATA_DIR"] = str(data_dir)
    return subprocess.run([str(COMMAND), "user", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-users")


def test_user_add_refuses_what_the_account_store_refuses(data_dir: Path) -> None:
    for password in ("eleven char", "BS.HOA-ADMIN", "pw of bs.hoa-admin!"):  # the command's own rule let these by
        added = user(data_dir, "add", "bs.hoa-admin", "--role", "admin", "--password-stdin", stdin=password + "\n")
        assert added.returncode == 1 and "password" in added.stderr and "created" not in added.stdout, added
    index = IndexDatabase.open(f"sqlite:///{data_dir / 'index.sqlite'}")
    try:
        assert AccountStore(index.engine).user("bs.hoa-admin") is None  # nothing was made
    finally:
        index.close()


def test_user_password_goes_through_the_same_policy(data_dir: Path) -> None:
    made = user(data_dir, "add", "bs.tam", "--role", "radiologist", "--password-stdin", stdin="twelve chars\n")
    assert made.returncode == 0, made.stderr
    changed = user(data_dir, "password", "bs.tam", "--password-stdin", stdin="short\n")
    assert changed.returncode == 1 and "at least 12 characters" in changed.stderr


def _expiry(data_dir: Path, token: str) -> dt.datetime | None:
    index = IndexDatabase.open(f"sqlite:///{data_dir / 'index.sqlite'}")
    try:
        with index.engine.connect() as conn:
            expires = conn.execute(select(tokens.c.expires_at).where(tokens.c.digest == token_digest(token))).scalar_one()
    finally:
        index.close()
    return None if expires is None else expires.replace(tzinfo=dt.timezone.utc)


def test_tokens_expire_after_90_days_unless_asked_otherwise(data_dir: Path) -> None:
    assert user(data_dir, "add", "svc-ris", "--role", "radiologist", "--no-password").returncode == 0
    now = dt.datetime.now(dt.timezone.utc)
    issued = user(data_dir, "token", "svc-ris")
    assert issued.returncode == 0 and "valid until" in issued.stderr, issued.stderr
    expires = _expiry(data_dir, issued.stdout.strip())
    assert expires is not None and abs(expires - (now + dt.timedelta(days=90))) < dt.timedelta(minutes=5)
    short = user(data_dir, "token", "svc-ris", "--hours", "2").stdout.strip()
    assert abs(_expiry(data_dir, short) - (now + dt.timedelta(hours=2))) < dt.timedelta(minutes=5)
    forever = user(data_dir, "token", "svc-ris", "--no-expiry")
    assert forever.returncode == 0 and _expiry(data_dir, forever.stdout.strip()) is None
    assert "until revoked" in forever.stderr
    for bad in (["--hours", "2", "--no-expiry"], ["--hours", "0"]):
        refused = user(data_dir, "token", "svc-ris", *bad)
        assert refused.returncode == 1 and not refused.stdout, bad


def test_link_and_grant_refuse_what_would_change_nothing(data_dir: Path) -> None:
    assert user(data_dir, "add", "bs.radiology", "--role", "radiologist", "--no-password").returncode == 0
    assert user(data_dir, "add", "bs.referring", "--role", "referring", "--no-password").returncode == 0
    for command in (("link", "bs.radiology", "MRN-1"), ("grant", "bs.radiology", "1.2.3.4")):
        refused = user(data_dir, *command)
        assert refused.returncode == 1 and "only referring physicians" in refused.stderr, refused
    refused = user(data_dir, "grant", "bs.referring", "MRN-1")  # a patient ID where the study's UID belongs
    assert refused.returncode == 1 and "not a DICOM UID" in refused.stderr, refused
    assert user(data_dir, "grant", "bs.referring", "1.2.3.4").returncode == 0
