"""Share links over HTTP: made with a QR code, used as a read-only principal bound to one study, expired, revoked, audited."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import storescu
from tests.factory import Patient, ct_series, write_files

SHARED = Patient(patient_id="MRN-S1", name="Hoàng^Thị Lan", citizen_id="001300000001", insurance_number="HS4010000000001")
OTHER = Patient(patient_id="MRN-S2", name="Phan^Văn Nam", citizen_id="001300000002", insurance_number="HS4010000000002")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    from tests.gateway_process import GatewayProcess

    tmp = tmp_path_factory.mktemp("shares")
    gw = GatewayProcess(tmp / "gw", {})
    gw.start()
    shared = ct_series(3, size=16, patient=SHARED, accession="ACC-S1")
    other = ct_series(1, size=16, patient=OTHER, accession="ACC-S2")
    assert storescu(gw.dicom_port, write_files(shared + other, tmp / "files")).returncode == 0
    gw.wait_idle()
    tokens = {role: gw.add_user(f"u-{role}", role) for role in ("radiologist", "referring", "auditor")}
    yield gw, shared, other[0].StudyInstanceUID, tokens
    gw.kill()


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _share(gw, study: str, options: dict | None = None, token: str | None = None) -> tuple[str, dict]:
    status, body = gw.send("POST", f"/studies/{study}/shares", options or {}, _as(token) if token else None, auth=token is None)
    assert status == 201, body
    return body["url"].split("#share=", 1)[1], body


def _audit(gw, username: str, count: int) -> list[dict]:
    deadline = time.monotonic() + 5
    while True:
        events = gw.get(f"/audit?user={username}")[1]
        if len(events) >= count or time.monotonic() > deadline:
            return list(reversed(events))
        time.sleep(0.2)  # events are written in batches


def test_a_link_carries_no_patient_data_and_comes_with_a_qr_code(gateway) -> None:
    gw, shared, _, tokens = gateway
    study = shared[0].StudyInstanceUID
    token, body = _share(gw, study, {"hours": 48, "label": "cho bệnh nhân"}, tokens["radiologist"])
    assert set(body) == {"id", "url", "expires_at", "label", "qr_svg"} and body["label"] == "cho bệnh nhân"
    assert body["url"] == f"{gw.base_url}/viewer/#share={token}" and token.startswith("share.")
    for phi in (study, SHARED.patient_id, SHARED.citizen_id, "Hoàng", "Hoang", "ACC-S1", shared[0].SeriesInstanceUID):
        assert phi not in body["url"]
    svg = ET.fromstring(body["qr_svg"].encode())
    assert svg.tag == "{http://www.w3.org/2000/svg}svg" and svg.find("{http://www.w3.org/2000/svg}path") is not None
    from gateway.http.shares import qr_svg

    assert body["qr_svg"] == qr_svg(body["url"])  # the code is of this very URL
    status, links = gw.get(f"/studies/{study}/shares", _as(tokens["radiologist"]), auth=False)
    assert status == 200 and [(link["id"], link["label"], link["created_by"], link["active"], link["revoked"]) for link in links] == [
        (body["id"], "cho bệnh nhân", "u-radiologist", True, False)
    ]
    assert links[0]["expires_at"] == body["expires_at"]


def test_bad_requests_to_share(gateway) -> None:
    gw, shared, _, tokens = gateway
    path = f"/studies/{shared[0].StudyInstanceUID}/shares"
    for options in ({"hours": 0}, {"hours": -1}, {"hours": "72"}, {"hours": True}, {"hours": 721}, {"label": "x" * 129},
                    {"label": 5}, {"days": 3}, [1], b"{oops"):  # fmt: skip
        status, body = gw.send("POST", path, options)
        assert status == 400 and body["error"], options
    assert gw.send("POST", path, {"hours": 720})[0] == 201
    assert gw.send("POST", "/studies/1.2.999.7/shares", {}) == (404, {"error": "no such study"})
    assert gw.send("POST", "/studies/1.02/shares", {})[0] == 400
    assert gw.send("DELETE", "/shares/999999") == (404, {"error": "no such share link"})
    assert gw.send("DELETE", "/shares/abc")[0] == 404
    for role in ("referring", "auditor"):
        assert gw.send("POST", path, {}, _as(tokens[role]), auth=False)[0] == 403
        assert gw.get(path, _as(tokens[role]), auth=False)[0] == 403
        assert gw.send("DELETE", "/shares/1", headers=_as(tokens[role]), auth=False)[0] == 403


def test_a_share_principal_sees_its_study_and_nothing_else(gateway) -> None:
    gw, shared, other, _ = gateway
    study, series, first = shared[0].StudyInstanceUID, shared[0].SeriesInstanceUID, shared[0].SOPInstanceUID
    token, body = _share(gw, study)
    link = _as(token)
    assert gw.get("/auth/me", link, auth=False) == (
        200, {"username": f"share:{body['id']}", "role": "share", "display_name": "", "study_uid": study}
    )  # fmt: skip
    status, found = gw.get("/dicom-web/studies", link, auth=False)
    assert status == 200 and [s["0020000D"]["Value"][0] for s in found] == [study]
    assert gw.get(f"/dicom-web/studies?PatientID={OTHER.patient_id}", link, auth=False) == (200, [])
    assert gw.get(f"/dicom-web/studies?StudyInstanceUID={other}", link, auth=False) == (200, [])
    assert {s["0020000D"]["Value"][0] for s in gw.get("/dicom-web/series", link, auth=False)[1]} == {study}
    assert len(gw.get(f"/dicom-web/studies/{study}/series/{series}/instances", link, auth=False)[1]) == 3
    instance = f"/dicom-web/studies/{study}/series/{series}/instances/{first}"
    for path in (f"/dicom-web/studies/{study}/metadata", f"/dicom-web/studies/{study}/thumbnail", f"{instance}/rendered",
                 f"{instance}/frames/1", f"{instance}/frames/1/rendered"):  # fmt: skip
        assert gw.get(path, {**link, "Accept": "*/*"}, auth=False)[0] == 200, path
    forbidden = [
        f"/dicom-web/studies/{other}/metadata", f"/dicom-web/studies/{other}/series", f"/dicom-web/studies/{other}/thumbnail",
        f"/studies/{other}/report", f"/dicom-web/studies/{study}", instance, f"{instance}/bulkdata/7FE00010",
        f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={first}", f"/studies/{study}/shares",
        "/report-templates", "/audit", "/metrics", f"/dicom-web/studies/{study}%2F..%2F{other}/metadata",
    ]  # fmt: skip
    for path in forbidden:
        assert gw.get(path, link, auth=False)[0] == 403, path
    assert gw.send("PUT", f"/studies/{study}/report", {"findings": "x", "impression": ""}, link, auth=False)[0] == 403
    assert gw.send("POST", f"/studies/{study}/shares", {}, link, auth=False)[0] == 403
    assert gw.send("POST", f"/dicom-web/studies/{study}", b"", link, auth=False)[0] == 403

    assert gw.get(f"/studies/{study}/report", link, auth=False) == (404, {"error": "no report"})
    gw.send("PUT", f"/studies/{study}/report", {"findings": "Bình thường.", "impression": "Không bất thường."})
    assert gw.get(f"/studies/{study}/report", link, auth=False) == (404, {"error": "no report"})  # a draft
    gw.send("POST", f"/studies/{study}/report/final")
    status, report = gw.get(f"/studies/{study}/report", link, auth=False)
    assert status == 200 and report["status"] == "final" and report["impression"] == "Không bất thường."

    events = _audit(gw, f"share:{body['id']}", 31)  # all of the above: 11 reads, 14 refused paths, 3 refused writes, 3 report reads
    assert {e["role"] for e in events} == {"share"} and {e["source"] for e in events} == {"127.0.0.1"}
    actions = {(e["action"], e["target"].split("?")[0], e["outcome"]) for e in events}
    assert ("share-access", "/auth/me", 200) in actions
    assert ("query", "/dicom-web/studies", 200) in actions
    assert ("retrieve", f"{instance}/frames/1", 200) in actions
    assert ("retrieve", f"/dicom-web/studies/{other}/metadata", 403) in actions
    assert ("read-report", f"/studies/{study}/report", 200) in actions
    assert ("write-report", f"/studies/{study}/report", 403) in actions
    assert ("share-access", "/metrics", 403) in actions


def test_expired_and_revoked_links_stop_working(gateway) -> None:
    gw, shared, _, tokens = gateway
    study = shared[0].StudyInstanceUID
    radiologist = _as(tokens["radiologist"])
    short_token, short = _share(gw, study, {"hours": 0.0005}, tokens["radiologist"])  # 1.8 seconds
    long_token, long = _share(gw, study, {"hours": 24, "label": "BS. Tuấn, BV tỉnh"}, tokens["radiologist"])
    for token in (short_token, long_token):
        assert gw.get("/dicom-web/studies", _as(token), auth=False)[0] == 200
    assert gw.send("DELETE", f"/shares/{long['id']}", headers=radiologist, auth=False)[0] == 204
    dead = (401, {"error": "this share link has expired or was revoked"})
    assert gw.get("/dicom-web/studies", _as(long_token), auth=False) == dead  # at once, though checked a moment ago
    assert gw.send("DELETE", f"/shares/{long['id']}", headers=radiologist, auth=False)[0] == 204  # again: harmless
    deadline = time.monotonic() + 10
    while gw.get("/dicom-web/studies", _as(short_token), auth=False)[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.1)  # until the short link's 1.8 seconds are over
    assert gw.get("/dicom-web/studies", _as(short_token), auth=False) == dead
    assert gw.get("/dicom-web/studies", _as("share.made-up"), auth=False) == (401, {"error": "a valid bearer token is required"})
    links = {link["id"]: link for link in gw.get(f"/studies/{study}/shares", radiologist, auth=False)[1]}
    assert (links[short["id"]]["active"], links[short["id"]]["revoked"]) == (False, False)
    assert (links[long["id"]]["active"], links[long["id"]]["revoked"], links[long["id"]]["revoked_by"]) == (False, True, "u-radiologist")
    gw.audit_events(lambda events: ("query", 401) in {(e["action"], e["outcome"]) for e in events}, f"user=share:{short['id']}")
    made = [(e["action"], e["outcome"]) for e in _audit(gw, "u-radiologist", 6) if e["action"].startswith("share-")]
    assert ("share-create", 201) in made and made.count(("share-revoke", 204)) == 2


def test_a_link_is_made_under_the_public_url_whatever_host_the_request_names(gateway) -> None:
    gw, shared, _, tokens = gateway
    study = shared[0].StudyInstanceUID
    forged = {**_as(tokens["radiologist"]), "Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    status, body = gw.send("POST", f"/studies/{study}/shares", {}, forged, auth=False)
    assert status == 201 and body["url"].startswith(f"{gw.base_url}/viewer/#share=share."), body["url"]


def test_without_a_public_url_no_link_is_made(tmp_path) -> None:
    from tests.gateway_process import GatewayProcess

    gw = GatewayProcess(tmp_path / "gw", {"PACSGW_HTTP_PUBLIC_URL": ""})
    gw.start()
    try:
        [instance] = ct_series(1, size=16, patient=SHARED, accession="ACC-S9")
        assert storescu(gw.dicom_port, write_files([instance], tmp_path / "files")).returncode == 0
        gw.wait_idle()
        study = instance.StudyInstanceUID
        status, body = gw.send("POST", f"/studies/{study}/shares", {}, {"Host": "evil.example"})
        assert status == 503 and "http.public_url" in body["error"], body
        assert gw.get(f"/studies/{study}/shares") == (200, [])  # nothing made
    finally:
        gw.kill()
