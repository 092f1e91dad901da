"""Journey: a modality sends a study to a pseudonymising gateway backed by S3.

No original identifier reaches any object in the bucket, the index or the
log; a administrator finds the study by the patient's
original MRN or citizen ID through the vault. A gateway asked to pseudonymise
without a secret, or given a broken rules file, does not start.
"""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import CTImageStorage
from pynetdicom import AE

from tests.conftest import s3_env, storescu
from tests.dicom_rules.phi_corpus import PLANTED, PLANTED_UIDS, planted_dataset, surviving, write_corpus

SECRET = "journey-secret-0123456789abcdefghijklmnop"
RULES = """
[defaults]
mode = "pseudonymised"

[[rule]]
name = "burned-in ultrasound"
calling_ae = "US*"
mode = "pseudonymised"
[[rule.filter]]
action = "reject"
when = { BurnedInAnnotation = "YES" }
reason = "burned-in annotation"
"""


def _gateway_env(tmp_path: Path, s3_server) -> dict[str, str]:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    return {
        **s3_env(s3_server, f"pseudo-{uuid.uuid4().hex[:10]}"),
        "PACSGW_DEID_RULES_FILE": str(rules),
        "PACSGW_DEID_SECRET": SECRET,
    }


def test_pseudonymised_study_in_s3_found_through_the_vault(start_gateway, s3_server, tmp_path: Path) -> None:
    gateway = start_gateway(_gateway_env(tmp_path, s3_server))
    files = write_corpus(tmp_path / "study", 12)
    result = storescu(gateway.dicom_port, files, calling="CT_ROOM1")
    assert result.returncode == 0, result.stderr

    refused = planted_dataset(index=50)
    refused.BurnedInAnnotation = "YES"
    ae = AE(ae_title="US_ROOM")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    status = assoc.send_c_store(refused)
    assoc.release()
    assert status.Status == 0x0124  # Refused: Not Authorized
    assert status.ErrorComment == "refused by rule 'burned-in ultrasound': burned-in annotation"

    gateway.wait_idle()
    store = gateway.open_store()
    keys = store.list_keys("studies/")
    assert len(keys) == 12
    for key in keys:
        assert not any(uid in key for uid in PLANTED_UIDS.values())
        data = store.get(key)
        assert surviving(data) == [], key
        assert dcmread(io.BytesIO(data)).PatientIdentityRemoved == "YES"

    # A radiologist's query by the original MRN matches nothing: the index holds pseudonyms only.
    reader = {"Authorization": f"Bearer {gateway.add_user('reader', 'radiologist')}"}
    status, body = gateway.get(f"/dicom-web/studies?PatientID={PLANTED['patient_id']}", reader, auth=False)
    assert status == 200 and body == []
    status, body = gateway.get("/dicom-web/studies", reader, auth=False)
    assert status == 200 and len(body) == 1
    pseudonym = body[0]["00100020"]["Value"][0]
    assert pseudonym.startswith("PGW") and body[0]["00201208"]["Value"] == [12]

    authorised = gateway.auth_headers  # an administrator may re-identify
    for original in (PLANTED["patient_id"], PLANTED["citizen_id"], PLANTED["insurance_number"]):
        status, body = gateway.get(f"/dicom-web/studies?PatientID={original}", authorised)
        assert status == 200 and len(body) == 1, original
        assert body[0]["00100020"]["Value"][0] == PLANTED["patient_id"]  # re-identified for the authorised reader
        assert body[0]["00100010"]["Value"][0]["Alphabetic"] == PLANTED["patient_name"]

    status, original = gateway.get(f"/vault/patient/{pseudonym}", authorised)
    assert status == 200 and original["PatientID"] == PLANTED["patient_id"]
    assert original["OtherPatientIDs"][0]["id"] == PLANTED["citizen_id"]
    assert gateway.get(f"/vault/patient/{pseudonym}", reader, auth=False)[0] == 403
    assert gateway.get(f"/vault/patient/{pseudonym}", auth=False)[0] == 401

    # Neither the index database nor the spool holds an original identifier in clear; nor does the log.
    for stored in (*gateway.data_dir.glob("index.sqlite*"), *(gateway.data_dir / "spool").rglob("*")):
        if stored.is_file():
            assert surviving(stored.read_bytes()) == [], stored
    log = gateway.log_tail(10_000)
    for value in (PLANTED["patient_id"], PLANTED["citizen_id"], "NGUYEN", PLANTED["accession_number"]):
        assert value not in log


def test_gateway_will_not_start_without_a_secret_or_with_broken_rules(s3_server, tmp_path: Path) -> None:
    from tests.gateway_process import GatewayProcess

    env = _gateway_env(tmp_path, s3_server)
    del env["PACSGW_DEID_SECRET"]
    gateway = GatewayProcess(tmp_path / "nosecret", env)
    try:
        gateway.start()
    except RuntimeError as exc:
        assert "no secret is configured" in str(exc)
    else:
        gateway.kill()
        raise AssertionError("a pseudonymising gateway started without a secret")

    broken = tmp_path / "broken.toml"
    broken.write_text('[defaults]\nmode = "pseudonymised"\noptions = ["retain_everything"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--data-dir", str(tmp_path / "broken")],
        env={"PACSGW_DEID_RULES_FILE": str(broken), "PACSGW_DEID_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"{broken}:3: defaults: unknown option 'retain_everything'" in result.stderr
