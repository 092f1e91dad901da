"""Commands run on the box that reveal or change what protects patients are audited as the server's requests are:
in the index, and as DICOM Audit Messages at the audit record repository (a real rsyslog over TLS)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


from tests.factory import Patient, ct_series, write_files
from tests.gateway.atna.received import parse
from tests.peers.rsyslog import Rsyslog

CONSOLE = Path(sys.executable).with_name("pacs-gateway")
SECRET = "cli-audit-secret-0123456789abcdefghijkl"
MRN = "MRN-CLI-AUDIT-77"


def _run(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CONSOLE), *args], cwd=home, env=env, capture_output=True, text=True, timeout=120)


def _trail(data: Path) -> list[dict]:
    from storage.index.accounts import AccountStore
    from storage.index.database import IndexDatabase

    index = IndexDatabase.open(f"sqlite:///{data / 'index.sqlite'}")
    try:
        return list(AccountStore(index.engine).audit_trail(since=None, username=None, limit=1000))
    finally:
        index.close()


def test_vault_lookups_and_a_second_factor_reset_reach_the_index_and_the_repository(tmp_path: Path, collector: Rsyslog) -> None:
    home = tmp_path / "home"
    home.mkdir()
    rules = home / "rules.toml"
    rules.write_text('[defaults]\nmode = "pseudonymised"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACSGW_")}
    env.update({
        "PACSGW_DATA_DIR": str(home / "data"), "PACSGW_DEID_SECRET": SECRET, "PACSGW_DEID_RULES_FILE": str(rules),
        "PACSGW_AUDIT_SYSLOG_HOST": "localhost", "PACSGW_AUDIT_SYSLOG_PORT": str(collector.port),
        "PACSGW_AUDIT_CA_FILE": str(collector.ca.cert_file),
    })  # fmt: skip
    write_files(ct_series(1, patient=Patient(patient_id=MRN)), home / "in")
    assert _run(home, env, "import", "--no-progress", str(home / "in")).returncode == 0
    found = _run(home, env, "vault", "find", MRN)
    assert found.returncode == 0, found.stderr
    [pseudonym] = found.stdout.split()
    assert _run(home, env, "vault", "reveal", pseudonym, "--kind", "patient").returncode == 0
    assert _run(home, env, "vault", "reveal", "PGWNOSUCH").returncode == 1  # a miss is audited too
    added = _run(home, env, "user", "add", "dr.a", "--role", "radiologist", "--password-stdin")
    assert added.returncode == 0, added.stderr
    reset = _run(home, env, "user", "reset-totp", "dr.a")
    assert reset.returncode == 0 and "wait for the audit repository" not in reset.stderr, reset.stderr

    trail = {(e["action"], e["outcome"]): e for e in _trail(home / "data") if e["source"] == "cli"}
    assert set(trail) == {("vault-find", 200), ("reidentify", 200), ("reidentify", 404), ("totp-reset", 404)}
    assert trail[("reidentify", 200)]["target"] == f"cli vault reveal patient {pseudonym}"
    assert MRN not in trail[("vault-find", 200)]["target"]  # the patient ID only as a keyed digest

    messages = [parse(line) for line in collector.wait_for(4, timeout=30)]
    assert len(messages) == 4 and all(m.process.startswith("cli") for m in messages)
    assert {m.event_id for m in messages} == {"110110", "110113"}  # Patient Record, Security Alert
    assert MRN not in collector.received.read_text()
