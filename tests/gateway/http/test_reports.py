"""Radiology reports over HTTP: drafts, signing final with its outbox message, who sees what, templates, the audit trail."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import storescu
from tests.factory import Patient, ct_series, write_files

FINDINGS = "- Nhu mô não hai bán cầu có tỷ trọng bình thường.\n- Đường giữa không lệch."
IMPRESSION = "Hiện tại không thấy hình ảnh bất thường."


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    from tests.gateway_process import GatewayProcess

    tmp = tmp_path_factory.mktemp("reports")
    gw = GatewayProcess(tmp / "gw", {})
    gw.start()
    datasets = []
    for n in range(5):
        patient = Patient(patient_id=f"MRN-R{n}", name=f"Trần^Văn {n}", citizen_id=f"00120000000{n}")
        datasets += ct_series(1, size=16, patient=patient, accession=f"ACC-R{n}")
    assert storescu(gw.dicom_port, write_files(datasets, tmp / "files")).returncode == 0
    gw.wait_idle()
    tokens = {
        "radiologist": gw.add_user("dr.hoa", "radiologist", display_name="BS. Nguyễn Thị Hoa"),
        "referring": gw.add_user("dr.referrer", "referring"),
        "auditor": gw.add_user("auditor", "auditor"),
    }
    from storage.index.accounts import AccountStore

    index = gw.open_index()
    AccountStore(index.engine).link_patient("dr.referrer", "MRN-R3")
    index.close()
    yield gw, [ds.StudyInstanceUID for ds in datasets], tokens
    gw.kill()


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _report(findings: str = FINDINGS, impression: str = IMPRESSION, template: str = "CT sọ não") -> dict[str, str]:
    return {"findings": findings, "impression": impression, "template": template}


def _outbox(gw, study: str) -> list[dict]:
    index = gw.open_index()
    try:
        with index.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT kind, payload FROM outbox WHERE subject = ?", (study,)).all()
    finally:
        index.close()
    return [{"kind": kind, "payload": json.loads(payload)} for kind, payload in rows]


def test_a_draft_is_saved_and_saved_over(gateway) -> None:
    gw, studies, tokens = gateway
    study = studies[0]
    assert gw.get(f"/studies/{study}/report") == (404, {"error": "no report"})
    status, body = gw.send("PUT", f"/studies/{study}/report", _report(), _as(tokens["radiologist"]), auth=False)
    assert status == 200
    assert {k: body[k] for k in ("study_uid", "status", "template", "findings", "impression", "author", "author_name")} == {
        "study_uid": study, "status": "draft", "template": "CT sọ não", "findings": FINDINGS, "impression": IMPRESSION,
        "author": "dr.hoa", "author_name": "BS. Nguyễn Thị Hoa",
    }  # fmt: skip
    assert body["finalized_at"] is None and body["finalized_by"] is None and body["finalized_by_name"] is None
    status, again = gw.send("PUT", f"/studies/{study}/report", _report("Sửa: bình thường.", "", ""))  # the administrator
    assert status == 200 and (again["findings"], again["impression"], again["author"]) == ("Sửa: bình thường.", "", "test-admin")
    assert again["author_name"] == "test-admin" and again["updated_at"] >= body["updated_at"]
    assert gw.get(f"/studies/{study}/report", _as(tokens["radiologist"]), auth=False) == (200, again)


def test_bad_drafts_are_refused(gateway) -> None:
    gw, studies, _ = gateway
    path = f"/studies/{studies[1]}/report"
    for body, reason in [
        (b"{not json", "JSON"),
        (["findings"], "findings"),
        ({"findings": 3, "impression": ""}, "findings must be a string"),
        ({"findings": ""}, "impression must be a string"),
        ({"findings": "x" * 20_001, "impression": ""}, "longer than 20000"),
        ({"findings": "", "impression": "", "template": "t" * 65}, "template is longer"),
    ]:
        status, answer = gw.send("PUT", path, body)
        assert status == 400 and reason in answer["error"], (body, answer)
    assert gw.send("PUT", path, {"findings": "x" * 20_000, "impression": ""})[0] == 200
    assert gw.send("PUT", "/studies/1.2.999.1/report", _report()) == (404, {"error": "no such study"})
    assert gw.send("PUT", "/studies/not-a-uid/report", _report())[0] == 400
    assert gw.get("/studies/1.2.03/report")[0] == 400


def test_signing_writes_one_outbox_message_and_freezes_the_report(gateway) -> None:
    gw, studies, tokens = gateway
    study, radiologist = studies[2], _as(tokens["radiologist"])
    assert gw.send("POST", f"/studies/{study}/report/final", headers=radiologist, auth=False) == (404, {"error": "no report"})
    gw.send("PUT", f"/studies/{study}/report", _report(" ", "\n"), radiologist, auth=False)
    status, body = gw.send("POST", f"/studies/{study}/report/final", headers=radiologist, auth=False)
    assert status == 400 and "findings or an impression" in body["error"]
    assert gw.get(f"/studies/{study}/report")[1]["status"] == "draft" and _outbox(gw, study) == []

    gw.send("PUT", f"/studies/{study}/report", _report(), radiologist, auth=False)
    status, final = gw.send("POST", f"/studies/{study}/report/final", headers=radiologist, auth=False)
    assert status == 200 and final["status"] == "final"
    assert (final["finalized_by"], final["finalized_by_name"]) == ("dr.hoa", "BS. Nguyễn Thị Hoa")
    assert final["finalized_at"].endswith("+00:00")
    [message] = _outbox(gw, study)
    assert message["kind"] == "diagnostic-report"
    payload = message["payload"]
    assert (payload["study_uid"], payload["accession_number"], payload["patient_id"], payload["modalities"]) == (study, "ACC-R2", "MRN-R2", ["CT"])
    assert (payload["findings"], payload["impression"]) == (FINDINGS, IMPRESSION)
    assert (payload["finalized_at"], payload["finalized_by"], payload["finalized_by_name"]) == (final["finalized_at"], "dr.hoa", "BS. Nguyễn Thị Hoa")

    assert gw.send("POST", f"/studies/{study}/report/final", headers=radiologist, auth=False)[0] == 409
    assert gw.send("PUT", f"/studies/{study}/report", _report("changed"), radiologist, auth=False)[0] == 409
    assert gw.get(f"/studies/{study}/report") == (200, final)
    assert len(_outbox(gw, study)) == 1
    assert "pacsgw_reports_finalized_total 1.0" in gw.get("/metrics")[1]


def test_referring_physicians_read_final_reports_of_their_patients_only(gateway) -> None:
    gw, studies, tokens = gateway
    referring = _as(tokens["referring"])
    linked, other = studies[3], studies[4]
    for study in (linked, other):
        gw.send("PUT", f"/studies/{study}/report", _report())
    assert gw.get(f"/studies/{linked}/report", referring, auth=False) == (404, {"error": "no report"})  # a draft
    assert gw.send("PUT", f"/studies/{linked}/report", _report(), referring, auth=False)[0] == 403
    assert gw.send("POST", f"/studies/{linked}/report/final", headers=referring, auth=False)[0] == 403
    gw.send("POST", f"/studies/{other}/report/final")
    assert gw.get(f"/studies/{other}/report", referring, auth=False)[0] == 404  # final, but not their patient
    gw.send("POST", f"/studies/{linked}/report/final")
    status, body = gw.get(f"/studies/{linked}/report", referring, auth=False)
    assert status == 200 and body["status"] == "final" and body["findings"] == FINDINGS
    auditor = _as(tokens["auditor"])
    assert gw.get(f"/studies/{linked}/report", auditor, auth=False)[0] == 403
    assert gw.get("/report-templates", auditor, auth=False)[0] == 403


def test_templates_by_modality(gateway) -> None:
    gw, _, tokens = gateway
    status, templates = gw.get("/report-templates", _as(tokens["referring"]), auth=False)
    assert status == 200 and {"CT", "MR", "CR", "DX", "US", "XA", "*"} <= set(templates)
    for modality, entries in templates.items():
        assert entries, modality
        for entry in entries:
            assert set(entry) == {"name", "findings", "impression"} and entry["name"]["vi"] and entry["name"]["en"]
    assert "CT sọ não không tiêm thuốc cản quang" in [t["name"]["vi"] for t in templates["CT"]]
    assert templates["DX"] == templates["CR"]
    assert all(t["findings"].strip() and t["impression"].strip() for m in ("CT", "MR", "CR", "US", "XA") for t in templates[m])


def test_report_reads_and_writes_are_audited(gateway) -> None:
    gw, studies, tokens = gateway
    reader = gw.add_user("dr.audited", "radiologist")
    study = studies[0]
    gw.send("PUT", f"/studies/{study}/report", _report(), _as(reader), auth=False)
    gw.get(f"/studies/{study}/report", _as(reader), auth=False)
    gw.send("POST", f"/studies/{study}/report/final", headers=_as(reader), auth=False)
    gw.send("POST", f"/studies/{study}/report/final", headers=_as(reader), auth=False)
    expected = [("write-report", 200), ("read-report", 200), ("finalize-report", 200), ("finalize-report", 409)]
    deadline = time.monotonic() + 5
    while True:
        events = gw.get("/audit?user=dr.audited", _as(tokens["auditor"]), auth=False)[1]
        seen = [(e["action"], e["outcome"]) for e in reversed(events)]
        if seen == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # events are written in batches
    assert seen == expected
    assert {e["target"] for e in events} == {f"/studies/{study}/report", f"/studies/{study}/report/final"}
