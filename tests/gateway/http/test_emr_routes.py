"""The EMR link's admin API: administrators only, audited, no payload in listings, input checked."""

from __future__ import annotations

import pytest

from storage.index.reconciliation import ReconciliationQueue
from tests.conftest import storescu
from tests.factory import Patient, ct_series, write_files


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    from tests.gateway_process import GatewayProcess

    tmp = tmp_path_factory.mktemp("emr-routes")
    gw = GatewayProcess(tmp / "gw", {})  # no EMR configured: messages wait in the outbox
    gw.start()
    series = ct_series(1, size=16, patient=Patient(patient_id="MRN-ROUTES"), accession="ACC-ROUTES")
    assert storescu(gw.dicom_port, write_files(series, tmp / "files")).returncode == 0
    gw.wait_idle()
    study = series[0].StudyInstanceUID
    assert gw.send("PUT", f"/studies/{study}/report", {"findings": "Bình thường.", "impression": "Bình thường."})[0] == 200
    assert gw.send("POST", f"/studies/{study}/report/final")[0] == 200
    index = gw.open_index()
    try:
        item = ReconciliationQueue(index.engine).open(study, patient_pk=1, reason="no EMR patient", tried=[])
    finally:
        index.close()
    yield gw, study, item
    gw.kill()


def test_only_administrators(gateway) -> None:
    gw, _, item = gateway
    for role in ("radiologist", "referring", "auditor"):
        headers = {"Authorization": f"Bearer {gw.add_user(f'emr-{role}', role)}"}
        for method, path in (("GET", "/emr/outbox"), ("POST", "/emr/outbox/1/retry"), ("GET", "/emr/reconciliation"),
                             ("POST", f"/emr/reconciliation/{item}/resolve")):  # fmt: skip
            assert gw.send(method, path, {"patient": "Patient/1"} if method == "POST" else None, headers, auth=False)[0] == 403, (role, path)
    assert gw.get("/emr/outbox", auth=False)[0] == 401


def test_outbox_listing_and_retry(gateway) -> None:
    gw, study, _ = gateway
    status, rows = gw.get("/emr/outbox")
    assert status == 200 and [(r["kind"], r["subject"], r["attempts"]) for r in rows] == [("diagnostic-report", study, 0)]
    assert "MRN-ROUTES" not in str(rows) and "Bình thường" not in str(rows) and "payload" not in rows[0]
    assert gw.get("/emr/outbox?state=pending")[1] == rows and gw.get("/emr/outbox?state=delivered")[1] == []
    assert gw.get("/emr/outbox?state=lost")[0] == 400 and gw.get("/emr/outbox?limit=x")[0] == 400
    status, retried = gw.send("POST", f"/emr/outbox/{rows[0]['id']}/retry")
    assert status == 200 and retried["id"] == rows[0]["id"]
    assert gw.send("POST", "/emr/outbox/424242/retry")[0] == 404 and gw.send("POST", "/emr/outbox/abc/retry")[0] == 404
    gw.audit_events(lambda trail: {"emr-outbox", "emr-outbox-retry"} <= {e["action"] for e in trail})


def test_reconciliation_listing_and_resolution(gateway) -> None:
    gw, study, item = gateway
    status, [row] = gw.get("/emr/reconciliation")
    assert status == 200 and (row["id"], row["study_uid"], row["reason"], row["patient"]) == (item, study, "no EMR patient", None)
    assert gw.get("/emr/reconciliation?state=resolved")[1] == [] and gw.get("/emr/reconciliation?state=x")[0] == 400
    path = f"/emr/reconciliation/{item}/resolve"
    for body in (b"{not json", {"patient": "Patient/"}, {"patient": "Patient/a b"}, {"patient": 7}, ["Patient/1"]):
        assert gw.send("POST", path, body)[0] == 400, body
    assert gw.send("POST", "/emr/reconciliation/999/resolve", {"patient": "Patient/p1"})[0] == 404
    status, resolved = gw.send("POST", path, {"patient": "Patient/p1"})
    assert status == 200 and (resolved["patient"], resolved["resolved_by"]) == ("Patient/p1", "test-admin")
    assert gw.get("/emr/reconciliation")[1] == [] and [r["id"] for r in gw.get("/emr/reconciliation?state=all")[1]] == [item]
    gw.audit_events(lambda trail: {"emr-reconciliation", "emr-reconcile"} <= {e["action"] for e in trail})
