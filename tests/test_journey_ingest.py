"""Journey: a modality sends a study; it is stored (UID-only keys), indexed, and found over QIDO-RS."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage, Verification

from tests.conftest import storescu
from tests.factory import CITIZEN_ID, INSURANCE_NUMBER, VIETNAMESE_NAME, ct_series, latin1_instance, to_bytes, write_files

UID_KEY = re.compile(r"studies/[0-9.]+/series/[0-9.]+/instances/[0-9.]+\.dcm")


def test_modality_study_is_stored_indexed_and_found(start_gateway, backend_env, tmp_path: Path) -> None:
    gateway = start_gateway(backend_env)
    series = ct_series(20, size=64)
    files = write_files(series, tmp_path / "ct")

    result = storescu(gateway.dicom_port, files)
    assert result.returncode == 0, result.stderr

    # A second sender, pynetdicom, with a Latin-1 encoded name, on its own association.
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(MRImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    latin = latin1_instance()
    assert assoc.send_c_store(latin).Status == 0x0000
    assoc.release()

    gateway.wait_idle()
    store = gateway.open_store()
    keys = store.list_keys("studies/")
    assert len(keys) == 21
    assert all(UID_KEY.fullmatch(k) for k in keys), keys
    stored = dcmread(io.BytesIO(store.get(keys[0])))
    assert stored.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"

    # Bytes as sent, no transcoding: every stored object equals the file sent.
    sent = {ds.SOPInstanceUID: to_bytes(ds)[132:] for ds in series}
    for key in keys:
        uid = key.rsplit("/", 1)[1][:-4]
        if uid in sent:
            assert store.get(key).endswith(sent[uid][-4096:])

    # Found by MRN, by citizen ID, by insurance number, by accent-free name, by date range.
    study_uid = series[0].StudyInstanceUID
    for query in (
        "PatientID=MRN-0001",
        f"PatientID={CITIZEN_ID}",
        f"PatientID={INSURANCE_NUMBER}",
        "PatientName=nguyen%20van%20an",
        "PatientName=NGUYEN*",
        "StudyDate=20240301-20240331",
        "AccessionNumber=ACC0001",
        f"StudyInstanceUID={study_uid}",
    ):
        status, body = gateway.get(f"/dicom-web/studies?{query}", {"Accept": "application/dicom+json"})
        assert status == 200, (query, body)
        assert [s["0020000D"]["Value"][0] for s in body] == [study_uid], query
    study = body[0]
    assert study["00100010"]["Value"][0]["Alphabetic"] == VIETNAMESE_NAME
    assert study["00201206"]["Value"] == [1]
    assert study["00201208"]["Value"] == [20]
    assert study["00080061"]["Value"] == ["CT"]

    status, body = gateway.get("/dicom-web/studies?PatientName=muller*")
    assert status == 200 and body[0]["00100010"]["Value"][0]["Alphabetic"] == "Müller^Jürgen"
    status, body = gateway.get("/dicom-web/studies?StudyDate=19990101")
    assert status == 200 and body == []

    status, metrics = gateway.get("/metrics")
    assert 'pacsgw_instances_received_total{source="dimse"} 21.0' in metrics
    assert "pacsgw_instances_stored_total 21.0" in metrics

    # Queries and receipts carried names and IDs; none of them reach the log.
    log = gateway.log_tail(10_000)
    for phi in ("Nguy", "nguyen", "MRN-0001", CITIZEN_ID, INSURANCE_NUMBER, "Müller", "muller", "ACC0001"):
        assert phi not in log, phi


def test_echo_with_dcmtk(start_gateway) -> None:
    import os
    import subprocess

    from tests.peers.orthanc import DCMTK_ENV, dcmtk_binary

    gateway = start_gateway()
    result = subprocess.run(
        [dcmtk_binary("echoscu"), "-aec", "PACSGW", "127.0.0.1", str(gateway.dicom_port)],
        env={**os.environ, **DCMTK_ENV},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("syntax", "propose"), [(JPEG2000Lossless, "-xv"), (RLELossless, "-xr"), (JPEGLSLossless, "-xt")]
)
def test_compressed_transfer_syntax_is_kept_as_received(start_gateway, tmp_path: Path, syntax, propose) -> None:
    """A compressed file is accepted in its own transfer syntax and stored byte for byte, not transcoded."""
    ds = ct_series(1, size=64)[0]
    ds.compress(syntax)
    [path] = write_files([ds], tmp_path / "compressed")
    gateway = start_gateway()
    # Propose the compressed syntax only, as a modality sending compressed images does.
    result = storescu(gateway.dicom_port, [path], options=(propose,))
    assert result.returncode == 0, result.stderr
    gateway.wait_idle()
    [row] = gateway.open_index().all_instances()
    assert row["transfer_syntax_uid"] == syntax
    stored = gateway.open_store().get(row["object_key"])
    assert stored[-4096:] == path.read_bytes()[-4096:]


def test_production_configuration_postgresql_index_and_s3(start_gateway, s3_server, postgres_server, tmp_path: Path) -> None:
    """The deployment the compose file describes: S3 objects, PostgreSQL index."""
    import uuid

    from tests.conftest import s3_env

    env = {
        **s3_env(s3_server, f"prod-{uuid.uuid4().hex[:8]}"),
        "PACSGW_INDEX_URL": postgres_server.create_database(f"gw_{uuid.uuid4().hex[:8]}"),
        "PACSGW_STORAGE_READ_CACHE_BYTES": str(256 << 20),
    }
    gateway = start_gateway(env)
    series = ct_series(15, size=64)
    result = storescu(gateway.dicom_port, write_files(series, tmp_path / "ct"))
    assert result.returncode == 0, result.stderr
    gateway.wait_idle()
    status, body = gateway.get("/dicom-web/studies?PatientName=nguyen%20van%20an")
    assert status == 200 and [s["00201208"]["Value"] for s in body] == [[15]]
    status, health = gateway.get("/health")
    assert health["index"]["ok"] and health["object_store"]["backend"] == "s3"
    # the start-up conformance check: SeaweedFS honours If-None-Match: *, so filing is create-only
    assert health["object_store"]["create_only"] is True, health["object_store"]
    assert "412" in health["object_store"]["conformance"]
    assert health["object_store"]["read_cache"]["bytes"] > 0  # the instances just filed, written through
    assert len(gateway.open_store().list_keys("studies/")) == 15
