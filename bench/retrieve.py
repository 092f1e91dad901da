"""Retrieve benchmark: study metadata and frames over WADO-RS, the gateway (on S3) against Orthanc's DICOMweb plugin.

One CT study of N instances (512x512, 16-bit) is sent by storescu to both:
the gateway storing in SeaweedFS (S3) with its SQLite index, and Debian's
Orthanc 1.10 with the DICOMweb plugin (its default SQLite index and file
storage). Then, against each, in the same run:

- ``GET /dicom-web/studies/{study}/metadata``, R times: median and best ms;
- frame 1 of every instance over ``.../frames/1`` (multipart/related;
  application/octet-stream), C requests in flight: frames per second.

Targets (product issue): study metadata under 200 ms; frames/s ahead of
Orthanc. Run from the repository root:  ``.venv/bin/python bench/retrieve.py``
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/retrieve.py``: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine  # noqa: E402
from tests.conftest import s3_env  # noqa: E402
from tests.factory import ct_series, write_files  # noqa: E402
from tests.gateway_process import GatewayProcess  # noqa: E402
from tests.peers.orthanc import DCMTK_ENV, dcmtk_binary, run_orthanc  # noqa: E402
from tests.peers.seaweedfs import run_seaweedfs  # noqa: E402

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def send(port: int, called: str, files: list[Path]) -> None:
    result = subprocess.run(
        [dcmtk_binary("storescu"), "-aet", "BENCH", "-aec", called, "127.0.0.1", str(port), *map(str, files)],
        env={**os.environ, **DCMTK_ENV}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"storescu to {called} failed: {result.stderr[-500:]}")


def get(url: str, headers: dict[str, str]) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=120) as response:
        return response.read()


def time_metadata(base: str, study: str, headers: dict[str, str], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        body = get(f"{base}/studies/{study}/metadata", {**headers, "Accept": "application/dicom+json"})
        samples.append(time.perf_counter() - start)
        assert body.startswith(b"[")
    return samples


def frames_per_second(base: str, study: str, series: str, instances: list[str], headers: dict[str, str], concurrency: int) -> float:
    def one(uid: str) -> int:
        return len(get(f"{base}/studies/{study}/series/{series}/instances/{uid}/frames/1", {**headers, "Accept": FRAME_ACCEPT}))

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, instances[:10]))  # warm-up
        start = time.perf_counter()
        sizes = list(pool.map(one, instances))
        seconds = time.perf_counter() - start
    assert all(size > 512 * 512 * 2 for size in sizes)
    return len(instances) / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/retrieve.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        series = ct_series(args.instances, size=512)
        files = write_files(series, work / "files")
        study, series_uid = series[0].StudyInstanceUID, series[0].SeriesInstanceUID
        uids = [ds.SOPInstanceUID for ds in series]
        results = {}
        with run_seaweedfs(work / "seaweedfs") as s3, run_orthanc(work / "orthanc", plugins=[DICOMWEB_PLUGIN]) as orthanc:
            gateway = GatewayProcess(work / "gw", s3_env(s3, f"bench-{uuid.uuid4().hex[:8]}"), product_defaults=True)
            local = GatewayProcess(work / "gw-local", {}, product_defaults=True)
            gateway.start()
            local.start()
            try:
                for target in (gateway, local):
                    send(target.dicom_port, "PACSGW", files)
                    target.wait_idle(timeout=600)
                send(orthanc.dicom_port, orthanc.aet, files)
                targets = {
                    "gateway (S3)": (f"{gateway.base_url}/dicom-web", gateway.auth_headers),
                    "gateway (local store)": (f"{local.base_url}/dicom-web", local.auth_headers),
                    "Orthanc + DICOMweb": (f"{orthanc.base_url}/dicom-web", {}),
                }
                for name, (base, headers) in targets.items():
                    samples = time_metadata(base, study, headers, args.repeat)
                    fps = frames_per_second(base, study, series_uid, uids, headers, args.concurrency)
                    results[name] = {"metadata_median_ms": statistics.median(samples) * 1000, "metadata_best_ms": min(samples) * 1000, "frames_per_s": fps}
            finally:
                gateway.kill()
                local.kill()
    m = machine()
    print(f"\nRetrieve benchmark, {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")
    print(f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['memory_gib']} GiB RAM")
    print(f"Study:   {args.instances} CT instances, 512x512 16-bit; metadata x{args.repeat}; frames with {args.concurrency} in flight\n")
    print(f"{'target':22} {'metadata median ms':>19} {'best ms':>8} {'frames/s':>9}")
    for name, r in results.items():
        print(f"{name:22} {r['metadata_median_ms']:19.1f} {r['metadata_best_ms']:8.1f} {r['frames_per_s']:9.1f}")
    theirs = results["Orthanc + DICOMweb"]
    for name in ("gateway (S3)", "gateway (local store)"):
        ours = results[name]
        print(f"\n{name}: metadata under 200 ms: {'PASS' if ours['metadata_median_ms'] < 200 else 'MISS'}"
              f" (Orthanc/gateway time ratio {theirs['metadata_median_ms'] / ours['metadata_median_ms']:.2f}x);"
              f" frames/s ahead of Orthanc: {'PASS' if ours['frames_per_s'] > theirs['frames_per_s'] else 'MISS'}"
              f" ({ours['frames_per_s'] / theirs['frames_per_s']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
