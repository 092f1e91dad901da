"""Pseudonyms are keyed and deterministic: the same in another process with the same secret, different with another."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.dicom_rules.phi_corpus import PLANTED_UIDS

_SCRIPT = """
import io, json, sys, warnings
warnings.simplefilter("ignore")
from pydicom import dcmread
from dicom_rules.rules import parse_rules
from gateway.ingest.rules_stage import RulesStage
from tests.dicom_rules.phi_corpus import part10_bytes, planted_dataset
stage = RulesStage(parse_rules('[defaults]\\nmode = "pseudonymised"\\n'), secret=sys.argv[1].encode(), quarantine_dir=None)
out = {}
for index in (0, 1):
    received = stage.receive(part10_bytes(planted_dataset(index)), source_ae="CT")
    ds = dcmread(io.BytesIO(bytes(received.data)))
    out[index] = {k: str(ds[k].value) for k in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
        "FrameOfReferenceUID", "PatientID", "AccessionNumber", "StudyDate")}
print(json.dumps(out))
"""


def _run(secret: str) -> dict[str, dict[str, str]]:
    result = subprocess.run([sys.executable, "-c", _SCRIPT, secret], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(result.stdout)


def test_same_secret_same_pseudonyms_in_separate_processes() -> None:
    secret = "site-secret-for-tests-0123456789abcdef"
    first, second, other = _run(secret), _run(secret), _run(secret + "-other")
    assert first == second
    for key in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "AccessionNumber"):
        assert first["0"][key] != other["0"][key], key
    assert first["0"]["StudyInstanceUID"] == first["1"]["StudyInstanceUID"]  # one study, one pseudonym
    assert first["0"]["SOPInstanceUID"] != first["1"]["SOPInstanceUID"]
    assert not set(PLANTED_UIDS.values()) & {v for item in first.values() for v in item.values()}
