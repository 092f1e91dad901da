"""``pacs-gateway anonymise``, ``vault``, ``quarantine`` and ``import`` as an administrator runs them (the console script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from storage.index.database import IndexDatabase
from tests.dicom_rules.phi_corpus import PLANTED, surviving, write_corpus

SECRET = "cli-secret-0123456789abcdefghijklmnopqrs"


def _run(
    *args: str, data_dir: Path, secret: str | None = SECRET, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PACSGW_")}, **(env or {})}
    env["PACSGW_DATA_DIR"] = str(data_dir)
    if secret:
        env["PACSGW_DEID_SECRET"] = secret
    return subprocess.run(
        [str(Path(sys.executable).with_name("pacs-gateway")), *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_anonymise_a_folder(tmp_path: Path) -> None:
    source = tmp_path / "NGUYEN THI PHI"  # folder names often carry the patient's name
    write_corpus(source, 6)
    (source / "notes.txt").write_text("not DICOM")
    result = _run("anonymise", str(source), str(tmp_path / "out"), "--no-progress", data_dir=tmp_path / "data")
    assert result.returncode == 2, result.stderr  # one file rejected
    assert "written:    6" in result.stdout and "rejected:   1" in result.stdout
    written = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(written) == 6
    for path in written:
        assert surviving(path.read_bytes()) == []
        assert "NGUYEN" not in str(path.relative_to(tmp_path / "out"))


def test_pseudonymise_offline_then_re_identify_from_the_vault(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\ndestination = "export"\nmode = "pseudonymised"\n')
    write_corpus(tmp_path / "in", 3)
    data_dir = tmp_path / "data"
    result = _run("anonymise", str(tmp_path / "in"), str(tmp_path / "out"), "--rules", str(rules), "--no-progress", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert "mode:       pseudonymised" in result.stdout and "vault:      6 entries" in result.stdout

    found = _run("vault", "find", PLANTED["citizen_id"], data_dir=data_dir)
    [pseudonym] = found.stdout.split()
    revealed = _run("vault", "reveal", pseudonym, data_dir=data_dir)
    assert json.loads(revealed.stdout)["PatientID"] == PLANTED["patient_id"]
    wrong_secret = _run("vault", "reveal", pseudonym, data_dir=data_dir, secret=SECRET + "x")
    assert wrong_secret.returncode == 1 and "sealed with key" in wrong_secret.stderr


def test_anonymise_refuses_broken_rules(tmp_path: Path) -> None:
    write_corpus(tmp_path / "in", 1)
    rules = tmp_path / "rules.toml"
    rules.write_text('[defaults]\nmode = "anonymised"\nkeep = ["PatientNmae"]\n')
    result = _run("anonymise", str(tmp_path / "in"), str(tmp_path / "out"), "--rules", str(rules), data_dir=tmp_path / "d")
    assert result.returncode == 1 and f"{rules}:3: defaults: 'PatientNmae' is not a DICOM keyword" in result.stderr
    assert not (tmp_path / "out").exists()


def test_quarantined_instances_can_be_listed_and_exported(tmp_path: Path) -> None:
    from dicom_rules.rules import parse_rules
    from gateway.ingest.rules_stage import RulesStage
    from tests.dicom_rules.phi_corpus import part10_bytes, planted_dataset

    rules = parse_rules('[defaults]\nmode = "pseudonymised"\n[[defaults.filter]]\naction = "quarantine"\nwhen = { Modality = "CT" }\n')
    stage = RulesStage(rules, secret=SECRET.encode(), quarantine_dir=tmp_path / "data" / "quarantine")
    data = part10_bytes(planted_dataset())
    stage.receive(data, source_ae="CT_ROOM1")
    listing = _run("quarantine", "list", data_dir=tmp_path / "data")
    assert "CT_ROOM1" in listing.stdout and "matches Modality=CT" in listing.stdout
    ident = listing.stdout.split()[0]
    exported = _run("quarantine", "export", ident, str(tmp_path / "review.dcm"), data_dir=tmp_path / "data")
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "review.dcm").read_bytes() == data


def test_import_applies_the_rules(tmp_path: Path) -> None:
    from storage.index.hierarchy import HierarchyQuery, Level

    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\ncalling_ae = "IMPORT"\nmode = "pseudonymised"\n')
    write_corpus(tmp_path / "in", 2)
    data_dir = tmp_path / "data"
    result = _run("import", "--no-progress", str(tmp_path / "in"), data_dir=data_dir, env={"PACSGW_DEID_RULES_FILE": str(rules)})
    assert result.returncode == 0, result.stderr
    index = IndexDatabase.open(f"sqlite:///{data_dir / 'index.sqlite'}")
    [study] = index.search_hierarchy(HierarchyQuery(Level.STUDY))
    index.close()
    assert study["PatientID"].startswith("PGW")
    objects = list((data_dir / "objects").rglob("*.dcm"))
    assert len(objects) == 2 and all(surviving(p.read_bytes()) == [] for p in objects)
