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
1.5x Orthanc from the local store and 1.0x from S3. The gateways run their
product default, HTTPS with the trial certificate they make (Orthanc: HTTP);
every target is read over connections kept alive, one per client thread, as a
viewer does (``--new-connections``: one per request, as this script did before).

``--https``: the gateway over HTTPS against itself over plain HTTP instead, in
the same run: two gateways on the local store, one with the product default
(HTTPS, the trial certificate: ECDSA P-256), one with ``http.plain``. Frames
are fetched over connections kept alive (as a viewer or dicomweb-client's
session does) and, separately, with a new connection (and so a full TLS
handshake) per request; rounds rotate the order, and the median of each
round's HTTPS/HTTP ratio is the result. Target (issue 13): at least 0.8x.
Run from the repository root:  ``.venv/bin/python bench/retrieve.py [--https]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
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


Getter = Callable[[str, dict[str, str]], bytes]


def urlopen_getter(context: ssl.SSLContext | None) -> Getter:
    """A new connection per request (urllib), trusting ``context``'s CA over HTTPS."""

    def get(url: str, headers: dict[str, str]) -> bytes:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=120, context=context) as response:
            return response.read()

    return get


def keep_alive_getter(context: ssl.SSLContext | None) -> Getter:
    """One connection per thread, kept alive between requests (as a browser or a requests session)."""
    local = threading.local()

    def get(url: str, headers: dict[str, str]) -> bytes:
        parts = urllib.parse.urlsplit(url)
        conn = getattr(local, "conn", None)
        if conn is None:
            if parts.scheme == "https":
                conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=context, timeout=120)
            else:
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
            local.conn = conn
        conn.request("GET", f"{parts.path}?{parts.query}" if parts.query else parts.path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}")
        return body

    return get


def time_metadata(base: str, study: str, headers: dict[str, str], repeat: int, get: Getter) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        body = get(f"{base}/studies/{study}/metadata", {**headers, "Accept": "application/dicom+json"})
        samples.append(time.perf_counter() - start)
        assert body.startswith(b"[")
    return samples


def frames_per_second(
    base: str, study: str, series: str, instances: list[str], headers: dict[str, str], concurrency: int, get: Getter
) -> float:
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
    parser.add_argument("--https", action="store_true", help="the gateway over HTTPS against itself over plain HTTP")
    parser.add_argument(
        "--new-connections", action="store_true",
        help="against Orthanc: a new connection per request (as before HTTPS; now a TLS handshake each for the gateway)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.https:
        return https_against_http(args)
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
                getter = urlopen_getter if args.new_connections else keep_alive_getter
                targets = {
                    name: (f"{gw.base_url}/dicom-web", gw.auth_headers, getter(gw.ssl_context()))
                    for name, gw in gateways.items()
                }
                targets["Orthanc + DICOMweb"] = (f"{orthanc.base_url}/dicom-web", {}, getter(None))
                for name, (base, headers, get) in targets.items():
                    samples = time_metadata(base, study, headers, args.repeat, get)
                    results[name] = {"metadata_median_ms": statistics.median(samples) * 1000, "metadata_best_ms": min(samples) * 1000, "frames": []}
                names = list(targets)
                for r in range(args.rounds):
                    for name in names[r % len(names) :] + names[: r % len(names)]:
                        base, headers, get = targets[name]
                        results[name]["frames"].append(frames_per_second(base, study, series_uid, uids, headers, args.concurrency, get))
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


def https_against_http(args: argparse.Namespace) -> int:
    """The same gateway over HTTPS (the product default) and over plain HTTP (http.plain), in one run."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        series = ct_series(args.instances, size=512)
        files = write_files(series, work / "files")
        study, series_uid = series[0].StudyInstanceUID, series[0].SeriesInstanceUID
        uids = [ds.SOPInstanceUID for ds in series]
        gateways = {
            "HTTPS": GatewayProcess(work / "gw-https", {}, product_defaults=True),
            "HTTP": GatewayProcess(work / "gw-http", {"PACSGW_HTTP_PLAIN": "true"}, product_defaults=True),
        }
        ways = {"keep-alive": keep_alive_getter, "new connection": urlopen_getter}
        results: dict[tuple[str, str], dict[str, list[float]]] = {}
        for gw in gateways.values():
            gw.start()
        try:
            for gw in gateways.values():
                assert gw.base_url.startswith("https" if gw is gateways["HTTPS"] else "http:")
                send(gw.dicom_port, "PACSGW", files)
                gw.wait_idle(timeout=600)
            keys = [(way, name) for way in ways for name in gateways]
            for key in keys:
                results[key] = {"metadata": [], "frames": []}
            for r in range(args.rounds):
                for way, name in keys[r % len(keys) :] + keys[: r % len(keys)]:
                    gw = gateways[name]
                    get = ways[way](gw.ssl_context())
                    base = f"{gw.base_url}/dicom-web"
                    results[(way, name)]["metadata"] += time_metadata(base, study, gw.auth_headers, args.repeat, get)
                    results[(way, name)]["frames"].append(
                        frames_per_second(base, study, series_uid, uids, gw.auth_headers, args.concurrency, get)
                    )
        finally:
            for gw in gateways.values():
                gw.kill()
    m = machine()
    print(f"\nRetrieve over HTTPS against HTTP, {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")
    print(f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['memory_gib']} GiB RAM, load average {os.getloadavg()[0]:.1f}")
    print(f"Study:   {args.instances} CT instances, 512x512 16-bit, local store; metadata x{args.repeat} per round; "
          f"frames with {args.concurrency} in flight, {args.rounds} rounds\n")  # fmt: skip
    print(f"{'connections':15} {'target':6} {'metadata median ms':>19}  frames/s per round")
    for (way, name), r in results.items():
        rounds = " ".join(f"{f:7.1f}" for f in r["frames"])
        print(f"{way:15} {name:6} {statistics.median(r['metadata']) * 1000:19.1f}  {rounds}")
    for way in ways:
        tls, plain = results[(way, "HTTPS")], results[(way, "HTTP")]
        ratios = [a / b for a, b in zip(tls["frames"], plain["frames"])]
        median = statistics.median(ratios)
        metadata = statistics.median(plain["metadata"]) / statistics.median(tls["metadata"])
        print(f"\n{way}: HTTPS frames/s at least 0.8x HTTP: {'PASS' if median >= 0.8 else 'MISS'} (median ratio "
              f"{median:.2f}x; rounds {' '.join(f'{x:.2f}' for x in ratios)}); metadata HTTP/HTTPS time ratio "
              f"{metadata:.2f}x: {'PASS' if metadata >= 0.8 else 'MISS'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
