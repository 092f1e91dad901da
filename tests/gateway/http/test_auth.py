"""Bearer-token authentication, roles, referring physicians' scope, and the audit trail."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.conftest import storescu
from tests.factory import Patient, ct_series, write_files


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    from tests.gateway_process import GatewayProcess

    tmp = tmp_path_factory.mktemp("auth")
    gw = GatewayProcess(tmp / "gw", {})
    gw.start()
    mine = ct_series(1, size=16, accession="MINE")
    other = ct_series(1, size=16, accession="OTHER", patient=Patient(patient_id="MRN-77", name="Võ^Thị Sáu", citizen_id="001000000077"))
    granted = ct_series(1, size=16, accession="GRANTED", patient=Patient(patient_id="MRN-88", name="Lý^Văn Tám", citizen_id="001000000088"))
    assert storescu(gw.dicom_port, write_files(mine + other + granted, tmp / "files")).returncode == 0
    gw.wait_idle()
    yield gw, mine[0], other[0], granted[0]
    gw.kill()


def _login(gateway, username: str, password: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        gateway.base_url + "/auth/login", data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_everything_but_health_needs_a_token(gateway) -> None:
    gw, *_ = gateway
    assert gw.get("/health", auth=False)[0] == 200
    for path in ("/dicom-web/studies", "/metrics", "/audit", "/dicom-web/studies/1.2.3/metadata"):
        assert gw.get(path, auth=False)[0] == 401, path
    assert gw.get("/dicom-web/studies", _bearer("made-up"), auth=False)[0] == 401


def test_login_with_a_hashed_password(gateway) -> None:
    gw, *_ = gateway
    gw.add_user("dr.an", "radiologist", password="correct horse battery")
    status, body = _login(gw, "dr.an", "correct horse battery")
    assert status == 200 and body["role"] == "radiologist"
    assert gw.get("/dicom-web/studies", _bearer(body["token"]), auth=False)[0] == 200
    assert _login(gw, "dr.an", "wrong password")[0] == 401
    index = gw.open_index()
    with index.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT password_hash FROM users WHERE username = 'dr.an'").scalar()
    index.close()
    assert stored.startswith("scrypt$") and "correct horse" not in stored


def test_referring_physician_sees_only_linked_patients_and_granted_studies(gateway) -> None:
    gw, mine, other, granted = gateway
    from storage.index.accounts import AccountStore

    token = gw.add_user("dr.referrer", "referring")
    index = gw.open_index()
    accounts = AccountStore(index.engine)
    accounts.link_patient("dr.referrer", mine.PatientID, "BV-CHORAY")
    accounts.grant_study("dr.referrer", granted.StudyInstanceUID)
    index.close()
    status, body = gw.get("/dicom-web/studies", _bearer(token), auth=False)
    assert status == 200 and sorted(s["00080050"]["Value"][0] for s in body) == ["GRANTED", "MINE"]
    assert gw.get(f"/dicom-web/studies/{other.StudyInstanceUID}/metadata", _bearer(token), auth=False)[0] == 404
    assert gw.get(f"/dicom-web/studies/{mine.StudyInstanceUID}/metadata", _bearer(token), auth=False)[0] == 200
    assert gw.get("/dicom-web/series?PatientID=MRN-77", _bearer(token), auth=False)[1] == []
    assert gw.get("/audit", _bearer(token), auth=False)[0] == 403


def _audit_digest(gw, value: str) -> str:
    """``pacs-gateway user audit-digest VALUE`` on the gateway's index, as an auditor looking for a value runs it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    command = [str(Path(sys.executable).parent / "pacs-gateway"), "user", "audit-digest", value]
    done = subprocess.run(command, env={**os.environ, **gw._environment()}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_auditor_reads_the_trail_and_nothing_else(gateway) -> None:
    gw, mine, *_ = gateway
    reader = gw.add_user("dr.audited", "radiologist")
    mrn = mine.PatientID
    gw.get(f"/dicom-web/studies?PatientID={mrn}&limit=10", _bearer(reader), auth=False)
    gw.get(f"/dicom-web/studies?StudyDescription={mrn}&AccessionNumber=MINE", _bearer(reader), auth=False)  # the wrong field
    gw.get(f"/dicom-web/studies/{mrn}/metadata", _bearer(reader), auth=False)  # a patient number where a UID goes
    assert _login(gw, "dr.audited", "guessing")[0] == 401
    auditor = gw.add_user("auditor", "auditor")
    assert gw.get("/dicom-web/studies", _bearer(auditor), auth=False)[0] == 403
    events = gw.audit_events(
        lambda events: sum(e["action"] in ("query", "retrieve") for e in events) == 3 and any(e["action"] == "login" for e in events),
        "user=dr.audited",
    )
    status, seen = gw.get("/audit?user=dr.audited", _bearer(auditor), auth=False)
    assert status == 200 and seen == events
    digest = _audit_digest(gw, mrn)
    assert digest.startswith("hmac:") and mrn not in json.dumps(events)  # no patient number for the auditor to read
    targets = [e["target"] for e in reversed(events) if e["action"] in ("query", "retrieve")]
    assert targets == [
        f"/dicom-web/studies?PatientID={digest}&limit=10",
        f"/dicom-web/studies?StudyDescription={digest}&AccessionNumber={_audit_digest(gw, 'MINE')}",
        f"/dicom-web/studies/{digest}/metadata",
    ]
    [event] = [e for e in events if e["target"].endswith("limit=10")]
    assert event["outcome"] == 200 and event["source"] == "127.0.0.1" and event["role"] == "radiologist"
    assert [e["outcome"] for e in events if e["action"] == "login"] == [401]


def test_revoked_tokens_stop_working(gateway) -> None:
    gw, *_ = gateway
    token = gw.add_user("leaver", "radiologist")
    assert gw.get("/dicom-web/studies", _bearer(token), auth=False)[0] == 200
    from storage.index.accounts import AccountStore

    index = gw.open_index()  # another process than the gateway's, as the `user revoke` command is
    AccountStore(index.engine).revoke_tokens("leaver")
    index.close()
    assert gw.get("/dicom-web/studies", _bearer(token), auth=False)[0] == 401  # at once, though checked a moment ago


def test_who_the_token_stands_for(gateway) -> None:
    gw, *_ = gateway
    token = gw.add_user("dr.minh", "radiologist", display_name="BS. Lê Văn Minh")
    assert gw.get("/auth/me", _bearer(token), auth=False) == (
        200, {"username": "dr.minh", "role": "radiologist", "display_name": "BS. Lê Văn Minh"}
    )  # fmt: skip
    auditor = gw.add_user("auditor", "auditor")
    assert gw.get("/auth/me", _bearer(auditor), auth=False)[1]["role"] == "auditor"
    assert gw.get("/auth/me", auth=False)[0] == 401


def _headers(gateway, path: str, token: str | None = None, method: str = "GET", body: bytes | None = None):
    """Status and headers of a response (read whole)."""
    headers = {"Accept": "*/*", **({"Authorization": f"Bearer {token}"} if token else {})}
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(gateway.base_url + path, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return response.status, response.headers
    except urllib.error.HTTPError as err:
        err.read()
        return err.code, err.headers


def test_no_response_is_kept_by_a_cache_nor_sniffed(gateway) -> None:
    gw, mine, *_ = gateway
    study, series, sop = mine.StudyInstanceUID, mine.SeriesInstanceUID, mine.SOPInstanceUID
    instance = f"/dicom-web/studies/{study}/series/{series}/instances/{sop}"
    paths = {
        "/dicom-web/studies": 200, f"/dicom-web/studies?PatientID={mine.PatientID}": 200, f"/dicom-web/studies/{study}": 200,
        f"/dicom-web/studies/{study}/metadata": 200, f"{instance}/frames/1": 200, f"{instance}/rendered": 200,
        f"/dicom-web/studies/{study}/thumbnail": 200, f"{instance}/bulkdata/7FE00010": 200,
        f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}": 200,
        f"/studies/{study}/report": 404, f"/studies/{study}/shares": 200, "/auth/me": 200, "/audit": 200, "/metrics": 200,
        "/health": 200, "/emr/outbox": 200, "/report-templates": 200, "/dicom-web/studies/1.2.3/metadata": 404,
        "/no/such/endpoint": 404,
    }  # fmt: skip
    for path, expected in paths.items():
        status, headers = _headers(gw, path, gw.token)
        assert status == expected, path
        assert (headers["Cache-Control"], headers["X-Content-Type-Options"]) == ("no-store", "nosniff"), path
    for path in ("/dicom-web/studies", f"/dicom-web/studies/{study}/metadata", "/health"):  # anonymous, refused or not
        status, headers = _headers(gw, path)
        assert (headers["Cache-Control"], headers["X-Content-Type-Options"]) == ("no-store", "nosniff"), path
    body = json.dumps({"username": "dr.nobody", "password": "not a password at all"}).encode()
    status, headers = _headers(gw, "/auth/login", method="POST", body=body)
    assert status == 401 and headers["Cache-Control"] == "no-store"
    gw.add_user("dr.headers", "radiologist", password="a password for headers")
    body = json.dumps({"username": "dr.headers", "password": "a password for headers"}).encode()
    status, headers = _headers(gw, "/auth/login", method="POST", body=body)  # a token in the body
    assert status == 200 and headers["Cache-Control"] == "no-store"
    for path, expected in (("/viewer", 200), ("/viewer/", 200), ("/viewer/app.js", 200), ("/viewer/nothing.js", 404)):
        status, headers = _headers(gw, path)
        assert status == expected, path
        assert (headers["Referrer-Policy"], headers["X-Content-Type-Options"]) == ("no-referrer", "nosniff"), path
    status, headers = _headers(gw, "/favicon.ico")  # asked for by browsers on every page: it holds no patient data
    assert status == 200 and headers["Cache-Control"] == "max-age=86400" and headers["X-Content-Type-Options"] == "nosniff"


def test_anonymous_health_tells_liveness_and_readiness_only(gateway) -> None:
    gw, *_ = gateway
    assert gw.get("/health", auth=False) == (200, {"live": True, "ready": True})
    for token in ("made-up", gw.add_user("dr.health", "radiologist")):
        assert gw.get("/health", _bearer(token), auth=False) == (200, {"live": True, "ready": True})
    for token in (gw.token, gw.add_user("auditor", "auditor")):
        status, body = gw.get("/health", _bearer(token), auth=False)
        assert status == 200 and body["dicom"]["port"] == gw.dicom_port and body["spool"]["backlog_instances"] == 0


def test_a_referring_physician_sees_their_patient_not_another_hospitals_with_the_same_id(gateway, tmp_path) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    gw, *_ = gateway
    twins = {}
    for issuer in ("BV-CHORAY", "OTHER-HOSPITAL"):
        series = ct_series(1, size=16, accession=f"TWIN-{issuer[:5]}", patient=Patient(patient_id="MRN-TWIN", citizen_id="", insurance_number=""))
        for ds in series:
            ds.IssuerOfPatientID = issuer
            del ds.OtherPatientIDsSequence
        assert storescu(gw.dicom_port, write_files(series, tmp_path / issuer)).returncode == 0
        twins[issuer] = series[0]
    gw.wait_idle()
    token = gw.add_user("dr.twin", "referring")
    command = [str(Path(sys.executable).parent / "pacs-gateway"), "user", "link", "dr.twin", "MRN-TWIN"]
    env = {**os.environ, **gw._environment()}
    vague = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert vague.returncode == 1 and "under 2 issuers" in vague.stderr and "--issuer" in vague.stderr, vague
    named = subprocess.run([*command, "--issuer", "BV-CHORAY"], env=env, capture_output=True, text=True, timeout=60)
    assert named.returncode == 0, named.stderr
    ours, theirs = twins["BV-CHORAY"], twins["OTHER-HOSPITAL"]
    for query in ("/dicom-web/studies", "/dicom-web/studies?PatientID=MRN-TWIN", "/dicom-web/series?PatientID=MRN-TWIN",
                  "/dicom-web/instances?PatientID=MRN-TWIN"):  # fmt: skip
        status, found = gw.get(query, _bearer(token), auth=False)
        assert status == 200 and {r["0020000D"]["Value"][0] for r in found} == {ours.StudyInstanceUID}, query
    assert gw.get(f"/dicom-web/studies/{ours.StudyInstanceUID}/metadata", _bearer(token), auth=False)[0] == 200
    for path in (f"/dicom-web/studies/{theirs.StudyInstanceUID}/metadata", f"/dicom-web/studies/{theirs.StudyInstanceUID}/thumbnail",
                 f"/studies/{theirs.StudyInstanceUID}/report"):  # fmt: skip
        assert gw.get(path, _bearer(token), auth=False)[0] == 404, path
