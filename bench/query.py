"""Query benchmark: QIDO-RS and C-FIND latency on a large embedded (SQLite) index.

The index is filled with synthetic rows through the gateway's own schema
(``storage.index.schema``): P patients (Vietnamese names, an MRN and a
12-digit citizen ID each), about 3 studies per patient and N instances in
all, with the counts and folded names that ingest would have written. Then
the gateway runs as a process on that index and is asked, one request at a
time:

- QIDO-RS ``/dicom-web/studies?PatientID=<MRN>`` (the PatientID key also
  searches other IDs, so this is the full patient-ID match);
- QIDO-RS ``/dicom-web/studies?PatientName=<accent-free name>`` (folded match);
- C-FIND Study Root, STUDY level, by PatientID (pynetdicom, one association).

Printed: p50 / p99 / max latency of each, in ms. Target (product issue): p99
under 20 ms for PatientID on the embedded SQLite index.

Run from the repository root:  ``.venv/bin/python bench/query.py [--instances 1000000]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import socket
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python bench/query.py``: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom.dataset import Dataset  # noqa: E402
from pynetdicom import AE  # noqa: E402
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from bench.common import machine  # noqa: E402
from storage.index.database import IndexDatabase  # noqa: E402
from storage.index.person_names import fold_name  # noqa: E402
from storage.index.schema import instances, patient_identifiers, patients, series, studies  # noqa: E402
from tests.gateway_process import GatewayProcess  # noqa: E402

FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ", "Hồ", "Ngô", "Dương", "Lý"]
MIDDLE = ["Văn", "Thị", "Hữu", "Đức", "Minh", "Ngọc", "Thanh", "Quốc", "Xuân", "Thu"]
GIVEN = ["An", "Bình", "Cường", "Dũng", "Giang", "Hà", "Hải", "Hạnh", "Hiếu", "Hoa", "Hùng", "Hương", "Khánh", "Lan",
         "Linh", "Long", "Mai", "Nam", "Nga", "Phong", "Phúc", "Quân", "Sơn", "Tâm", "Thảo", "Trang", "Tuấn", "Yến"]  # fmt: skip


def fill(url: str, patients_count: int, instance_count: int, seed: int = 7) -> list[tuple[str, str]]:
    """Bulk-load the index; returns (MRN, name) of every patient."""
    rng = random.Random(seed)
    index = IndexDatabase.open(url)
    now = dt.datetime.now(dt.timezone.utc)
    people: list[tuple[str, str]] = []
    per_study = max(1, instance_count // (patients_count * 3))
    with index.engine.begin() as conn:
        patient_rows, id_rows = [], []
        for p in range(1, patients_count + 1):
            name = f"{rng.choice(FAMILY)}^{rng.choice(MIDDLE)} {rng.choice(GIVEN)} {p}"
            mrn = f"MRN{p:07d}"
            people.append((mrn, name))
            patient_rows.append(
                {"pk": p, "patient_id": mrn, "issuer": "BV", "patient_name": name, "patient_name_folded": fold_name(name),
                 "birth_date": f"19{rng.randint(30, 99)}0101", "sex": rng.choice("MF"), "updated_at": now}
            )  # fmt: skip
            id_rows.append({"patient_pk": p, "identifier": f"0{p:011d}", "issuer": "CCCD", "id_type": "TEXT"})
        conn.execute(insert(patients), patient_rows)
        conn.execute(insert(patient_identifiers), id_rows)
        study_pk = series_pk = instance_pk = 0
        made = 0
        for p in range(1, patients_count + 1):
            for _ in range(3):
                if made >= instance_count:
                    break
                study_pk += 1
                series_pk += 1
                count = min(per_study, instance_count - made)
                day = dt.date(2020, 1, 1) + dt.timedelta(days=rng.randint(0, 1800))
                conn.execute(insert(studies), [{
                    "pk": study_pk, "study_uid": f"2.25.{study_pk}", "patient_pk": p, "study_date": day.strftime("%Y%m%d"),
                    "study_time": "101500", "accession_number": f"A{study_pk:08d}", "study_id": "1",
                    "study_description": "CT", "referring_physician_name": "", "referring_physician_folded": "",
                    "modalities": "CT", "num_series": 1, "num_instances": count, "updated_at": now,
                }])  # fmt: skip
                conn.execute(insert(series), [{
                    "pk": series_pk, "series_uid": f"2.25.9{series_pk}", "study_pk": study_pk, "modality": "CT",
                    "series_number": 1, "series_description": "Axial", "body_part_examined": "HEAD",
                    "performed_start_date": "", "performed_start_time": "", "num_instances": count,
                }])  # fmt: skip
                rows = []
                for i in range(count):
                    instance_pk += 1
                    rows.append({
                        "pk": instance_pk, "sop_instance_uid": f"2.25.8{instance_pk}", "series_pk": series_pk,
                        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "instance_number": i + 1,
                        "transfer_syntax_uid": "1.2.840.10008.1.2.1", "rows": 512, "columns": 512, "bits_allocated": 16,
                        "number_of_frames": None, "size": 525_000, "object_key": f"studies/x/series/y/instances/{instance_pk}.dcm",
                        "source_ae": "CT", "received_at": now,
                    })  # fmt: skip
                conn.execute(insert(instances), rows)
                made += count
    index.close()
    return people


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered) * 1000, 2),
        "p99": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


def time_qido(gateway: GatewayProcess, queries: list[str]) -> list[float]:
    samples = []
    for query in queries:
        request = urllib.request.Request(gateway.base_url + "/dicom-web/studies?" + query, headers=gateway.auth_headers)
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        samples.append(time.perf_counter() - start)
        assert body.startswith(b"[{"), query  # every query matches a patient
    return samples


def time_cfind(gateway: GatewayProcess, patient_ids: list[str]) -> list[float]:
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(STUDY_ROOT)
    assoc = ae.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    # pynetdicom leaves Nagle on: its request's second PDU would wait ~40 ms for a delayed ACK.
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples = []
    for patient_id in patient_ids:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.PatientID = patient_id
        identifier.StudyInstanceUID = ""
        identifier.StudyDate = ""
        start = time.perf_counter()
        statuses = [status.Status for status, _ in assoc.send_c_find(identifier, STUDY_ROOT)]
        samples.append(time.perf_counter() - start)
        assert statuses[-1] == 0 and len(statuses) > 1, statuses
    assoc.release()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/query.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "gw"
        data_dir.mkdir()
        started = time.perf_counter()
        people = fill(f"sqlite:///{data_dir / 'index.sqlite'}", args.patients, args.instances)
        print(f"filled {args.instances} instances, {args.patients} patients in {time.perf_counter() - started:.0f} s", flush=True)
        gateway = GatewayProcess(data_dir, {"PACSGW_DICOM_QUERY_AETS": "BENCH"})
        gateway.start()
        try:
            rng = random.Random(11)
            chosen = [rng.choice(people) for _ in range(args.queries)]
            time_qido(gateway, [f"PatientID={m}" for m, _ in chosen[:20]])  # warm the page cache
            results: dict[str, Any] = {
                "QIDO PatientID": percentiles(time_qido(gateway, [f"PatientID={m}" for m, _ in chosen])),
                "QIDO PatientName (accent-free)": percentiles(
                    time_qido(gateway, [f"PatientName={urllib.parse.quote(fold_name(n))}" for _, n in chosen])
                ),
                "C-FIND PatientID": percentiles(time_cfind(gateway, [m for m, _ in chosen])),
            }
        finally:
            gateway.kill()
    m = machine()
    print(f"\nQuery benchmark, {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")
    print(f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['memory_gib']} GiB RAM")
    print(f"Index:   SQLite, {args.instances} instances, {args.patients} patients, ~{args.patients * 3} studies; {args.queries} queries each\n")
    print(f"{'query':34} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, value in results.items():
        print(f"{name:34} {value['p50']:8.2f} {value['p99']:8.2f} {value['max']:8.2f}")
    verdict = "PASS" if results["QIDO PatientID"]["p99"] < 20 and results["C-FIND PatientID"]["p99"] < 20 else "MISS"
    print(f"\ntarget: p99 < 20 ms for PatientID (QIDO and C-FIND): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
