"""Retrieve benchmark: study metadata and frames over WADO-RS, the gateway (on S3) against Orthanc's DICOMweb plugin.

One CT study of N instances (512x512, 16-bit) is sent by storescu to both:
the gateway storing in SeaweedFS (S3) with its SQLite index, and Debian's
Orthanc 1.10 with the DICOMweb plugin (its default SQLite index and file
storage). Then, against each, in the same run:

- ``GET /dicom-web/studies/{study}/metadata``, R times: median and best ms;
- frame 1 of every instance over ``.../frames/1`` (multipart/related;
  application/octet-stream), C requests in flight: frames per second.

The gateway on S3 runs twice, with its read cache (``storage.read_cache_bytes``,
default) and without (0). Frames are measured in R rounds, the targets in a
rotating order each round, and each round's ratio to Orthanc is taken in that
round: the machine is shared, so the medians of the ratios are the result.

Targets (product issue 12): study metadata under 200 ms; frames/s at least
1.5x Orthanc from the local store and 1.0x from S3.
Run from the repository root:  ``.venv/bin/python bench/retrieve.py``
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
    parser.add_argument("--rounds", type=int, default=3, help="frames rounds, each target once per round")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        series = ct_series(args.instances, size=512)
        files = write_files(series, work / "files")
        study, series_uid = series[0].StudyInstanceUID, series[0].SeriesInstanceUID
        uids = [ds.SOPInstanceUID for ds in series]
        results = {}
        with run_seaweedfs(work / "seaweedfs") as s3, run_orthanc(work / "orthanc", plugins=[DICOMWEB_PLUGIN]) as orthanc:
            gateways = {
                "gateway (S3)": GatewayProcess(
                    work / "gw", {**s3_env(s3, f"bench-{uuid.uuid4().hex[:8]}"), "PACSGW_STORAGE_READ_CACHE_BYTES": str(256 << 20)},
                    product_defaults=True,
                ),
                "gateway (S3, no cache)": GatewayProcess(
                    work / "gw-nocache", {**s3_env(s3, f"bench-{uuid.uuid4().hex[:8]}"), "PACSGW_STORAGE_READ_CACHE_BYTES": "0"},
                    product_defaults=True,
                ),  # fmt: skip
                "gateway (local store)": GatewayProcess(work / "gw-local", {}, product_defaults=True),
            }
            for target in gateways.values():
                target.start()
            try:
                for target in gateways.values():
                    send(target.dicom_port, "PACSGW", files)
                    target.wait_idle(timeout=600)
                send(orthanc.dicom_port, orthanc.aet, files)
                targets = {name: (f"{gw.base_url}/dicom-web", gw.auth_headers) for name, gw in gateways.items()}
                targets["Orthanc + DICOMweb"] = (f"{orthanc.base_url}/dicom-web", {})
                for name, (base, headers) in targets.items():
                    samples = time_metadata(base, study, headers, args.repeat)
                    results[name] = {"metadata_median_ms": statistics.median(samples) * 1000, "metadata_best_ms": min(samples) * 1000, "frames": []}
                names = list(targets)
                for r in range(args.rounds):
                    for name in names[r % len(names) :] + names[: r % len(names)]:
                        base, headers = targets[name]
                        results[name]["frames"].append(frames_per_second(base, study, series_uid, uids, headers, args.concurrency))
            finally:
                for target in gateways.values():
                    target.kill()
    m = machine()
    print(f"\nRetrieve benchmark, {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")
    print(f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['memory_gib']} GiB RAM, load average {os.getloadavg()[0]:.1f}")
    print(f"Study:   {args.instances} CT instances, 512x512 16-bit; metadata x{args.repeat}; frames with {args.concurrency} in flight, {args.rounds} rounds\n")
    print(f"{'target':24} {'metadata median ms':>19} {'best ms':>8}  frames/s per round")
    for name, r in results.items():
        rounds = " ".join(f"{f:7.1f}" for f in r["frames"])
        print(f"{name:24} {r['metadata_median_ms']:19.1f} {r['metadata_best_ms']:8.1f}  {rounds}")
    theirs = results["Orthanc + DICOMweb"]
    goals = {"gateway (S3)": 1.0, "gateway (S3, no cache)": 1.0, "gateway (local store)": 1.5}
    for name, goal in goals.items():
        ours = results[name]
        ratios = [a / b for a, b in zip(ours["frames"], theirs["frames"])]
        median = statistics.median(ratios)
        print(f"\n{name}: metadata under 200 ms: {'PASS' if ours['metadata_median_ms'] < 200 else 'MISS'}"
              f" (Orthanc/gateway time ratio {theirs['metadata_median_ms'] / ours['metadata_median_ms']:.2f}x);"
              f" frames/s at least {goal}x Orthanc: {'PASS' if median >= goal else 'MISS'}"
              f" (median ratio {median:.2f}x; rounds {' '.join(f'{x:.2f}' for x in ratios)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
