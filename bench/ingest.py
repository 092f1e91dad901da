"""Ingest benchmark: the gateway against Orthanc, both fed by DCMTK ``storescu``.

Everything runs on this machine, on free ephemeral ports, and is torn down on exit:
SeaweedFS (S3), the gateway (``python -m gateway serve`` with its default settings,
S3 backend or with ``--backend local`` the local object store, SQLite index) and
Debian's Orthanc (default SQLite index + filesystem storage).  Every run starts
from empty: a fresh gateway data dir and bucket, a fresh Orthanc work dir.

Measured per target and number of parallel associations P (the N files are split
into P contiguous chunks, one ``storescu`` process per chunk, all started at once):

- acknowledged rate: N / seconds until every storescu exited (every C-STORE answered);
- end-to-end rate: N / seconds until every instance is stored and indexed.  Gateway:
  ``GET /health`` shows an empty spool (``spool.backlog_instances == 0``).  Orthanc
  stores before it answers, so this is its acknowledged time plus one REST check.
- peak RSS per process: the largest VmHWM of any one process of the server's process tree
  (gateway: with ``--workers`` above 1 the supervisor, each worker and the HL7 process, each
  listed; Orthanc: Orthanc; storescp: the listener), so that "flat in N" can be read per process.
- CPU ms per instance: user + system CPU of the server's whole process tree over the run
  (``/proc/<pid>/stat`` of every descendant, read before and after, every thread; children
  that exit during the run count through their parent's ``cutime``; bench/proctree.py),
  divided by N.

The gateway runs as it ships: ``serve.workers`` at the product default (one worker per CPU,
a supervisor and an HL7 process), or ``--workers N``.

DCMTK ``storescp --fork`` writing each instance to a temp dir (no fsync) runs in the same
run as the limit of this machine (``--no-storescp`` leaves it out).

Counts are verified after every run (gateway: QIDO-RS NumberOfStudyRelatedInstances
and the objects in the bucket; Orthanc: ``GET /statistics``); a failed send or a
wrong count aborts the benchmark with exit status 1 instead of reporting a rate.

Run from the repository root:  ``.venv/bin/python -m bench.ingest [--help]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python bench/ingest.py``: make ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine  # noqa: E402
from bench.ingest_tls import TlsSetup, report_tls  # noqa: E402
from bench.proctree import TreeSample  # noqa: E402
from tests.conftest import s3_env  # noqa: E402
from tests.factory import ct_series, write_files  # noqa: E402
from tests.gateway_process import GatewayProcess  # noqa: E402
from tests.peers.orthanc import DCMTK_ENV, dcmtk_binary, run_orthanc  # noqa: E402
from tests.peers.ports import free_port  # noqa: E402
from tests.peers.seaweedfs import S3Server, run_seaweedfs  # noqa: E402

# Product issue 12, local store: e2e >= 1.5x Orthanc on 1 association and >= 1.0x on 4;
# ack >= 0.8x DCMTK storescp on 4 associations; S3 backend: ack >= 1.5x Orthanc.
TARGET_E2E_RATIO = {1: 1.5, 4: 1.0}
TARGET_S3_ACK_RATIO = 1.5
TARGET_STORESCP_ACK_RATIO = 0.8
POLL_SECONDS = 0.05
# s3_env() shortens these for outage tests; the benchmark keeps the product defaults.
TEST_ONLY_ENV = ("PACSGW_S3_CONNECT_TIMEOUT", "PACSGW_SPOOL_RETRY_MAX_SECONDS")


class BenchError(RuntimeError):
    """A run failed (send, storage or count check): no rate is reported for it."""


@dataclass
class Run:
    target: str
    associations: int
    instances: int
    ack_seconds: float
    e2e_seconds: float
    idle_rss_mib: float  # largest VmRSS of one process of the tree once ready, before the first C-STORE
    peak_rss_mib: float  # largest VmHWM of one process of the tree after the run
    cpu_seconds: float = 0.0  # user + system CPU of the server's process tree over the run
    workers: int = 0  # gateway: serve.workers (0 for the peers)
    processes: int = 1  # processes in the tree after the run
    peak_rss_by_process: dict[str, float] = field(default_factory=dict)  # VmHWM per process name
    cpu_seconds_by_process: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_ms_per_instance(self) -> float:
        return 1000 * self.cpu_seconds / self.instances

    @property
    def ack_rate(self) -> float:
        return self.instances / self.ack_seconds

    @property
    def e2e_rate(self) -> float:
        return self.instances / self.e2e_seconds

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ack_rate": self.ack_rate, "e2e_rate": self.e2e_rate,
                "cpu_ms_per_instance": self.cpu_ms_per_instance}


def measured(target: str, parallel: int, instances: int, ack: float, e2e: float, idle: TreeSample,
             before: TreeSample, after: TreeSample, workers: int = 0) -> Run:
    """A run's figures from samples of the server's process tree: idle, before the first C-STORE, after."""
    return Run(target, parallel, instances, ack, e2e, max((p.rss_mib for p in idle.procs), default=0.0),
               after.peak_per_process_mib, after.cpu_seconds - before.cpu_seconds, workers, len(after.procs),
               after.peaks(), after.cpu_by_name(before))


class Profiler:
    """``py-spy record`` attached to the gateway for one run (``--profile``), a flame graph per run."""

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = out_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, pid: int, name: str) -> None:
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        spy = Path(sys.executable).with_name("py-spy")
        self.proc = subprocess.Popen(
            [str(spy), "record", "--pid", str(pid), "--subprocesses", "--rate", "250", "--format", "raw", "--gil",
             "--output", str(self.out_dir / f"{name}.txt")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # let it attach before the first instance

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)
            self.proc = None


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not reached within {timeout:g} s")
        time.sleep(POLL_SECONDS)


def send(port: int, called_aet: str, files: list[Path], parallel: int, log_dir: Path,
         timeout: float, options: tuple[str, ...] = ()) -> tuple[float, float]:
    """Send ``files`` over ``parallel`` storescu associations (``options``: DICOM TLS); return (start, ack seconds)."""
    size, extra = divmod(len(files), parallel)
    chunks, begin = [], 0
    for i in range(parallel):
        end = begin + size + (1 if i < extra else 0)
        chunks.append(files[begin:end])
        begin = end
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = [log_dir / f"storescu-{i}.log" for i in range(parallel)]
    procs: list[subprocess.Popen[bytes]] = []
    start = time.perf_counter()
    try:
        for chunk, log_path in zip(chunks, logs):
            with log_path.open("wb") as log:
                procs.append(subprocess.Popen(
                    [dcmtk_binary("storescu"), *options, "-aet", "BENCHSCU", "-aec", called_aet,
                     "127.0.0.1", str(port), *map(str, chunk)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env={**os.environ, **DCMTK_ENV},
                ))
        codes = [proc.wait(timeout) for proc in procs]
        elapsed = time.perf_counter() - start
    except subprocess.TimeoutExpired:
        raise BenchError(f"storescu still sending after {timeout:g} s") from None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for code, log_path in zip(codes, logs):
        text = log_path.read_text(errors="replace")
        if code != 0 or re.search(r"^E:", text, re.MULTILINE):
            raise BenchError(f"storescu failed (exit {code}), {log_path}:\n{text[-2000:]}")
    return start, elapsed


def bench_gateway(s3: S3Server | None, files: list[Path], study_uid: str, parallel: int,
                  work: Path, timeout: float, profiler: Profiler | None = None, workers: int | None = None,
                  tls: TlsSetup | None = None) -> Run:
    """One run against a fresh gateway: S3 backend when ``s3`` is given, else the local object store.

    ``workers``: ``serve.workers``; None for the product's default (one per CPU). ``tls``: over DICOM TLS only.
    """
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    env = {k: v for k, v in s3_env(s3, bucket).items() if k not in TEST_ONLY_ENV} if s3 else {}
    target = "gateway-tls" if tls else "gateway"
    tls_port = tls.port() if tls else 0
    env.update(tls.gateway_env(tls_port) if tls else {})
    name = f"{target}-p{parallel}-n{len(files)}"
    gateway = GatewayProcess(work / name, env, product_defaults=True, workers=workers)
    try:
        gateway.start()
        assert gateway.proc is not None
        pid = gateway.proc.pid
        idle = TreeSample.read(pid)
        if profiler:
            profiler.start(pid, name)
        before = TreeSample.read(pid)
        start, ack = send(tls_port or gateway.dicom_port, gateway.ae_title, files, parallel, work / f"{name}-scu",
                          timeout, tls.scu_options() if tls else ())

        def drained() -> bool:
            _, health = gateway.get("/health")
            return health["spool"]["backlog_instances"] == 0

        try:
            wait_for("gateway spool drained", drained, timeout)
        except BenchError as exc:
            raise BenchError(f"{exc}; /health: {gateway.get('/health')[1]}\n{gateway.log_tail()}") from None
        e2e = time.perf_counter() - start
        after = TreeSample.read(pid)
        if profiler:
            profiler.stop()

        status, body = gateway.get(f"/dicom-web/studies?StudyInstanceUID={study_uid}",
                                   {"Accept": "application/dicom+json"})
        indexed = int(body[0]["00201208"]["Value"][0]) if status == 200 and body else 0
        if s3 is not None:
            stored = sum(1 for _ in s3.client().list_objects(bucket, prefix="studies/", recursive=True))
        else:
            stored = sum(1 for _ in (gateway.data_dir / "objects" / "studies").rglob("*.dcm"))
        if indexed != len(files) or stored != len(files):
            raise BenchError(f"gateway: sent {len(files)}, indexed {indexed} (QIDO status {status}), "
                             f"{stored} objects stored\n{gateway.log_tail()}")
    finally:
        if profiler:
            profiler.stop()
        gateway.stop()
    return measured(target, parallel, len(files), ack, e2e, idle, before, after, gateway.worker_count)


def bench_orthanc(files: list[Path], parallel: int, work: Path, timeout: float,
                  tls: TlsSetup | None = None) -> tuple[Run, str]:
    target = "orthanc-tls" if tls else "orthanc"
    with run_orthanc(work / f"{target}-p{parallel}", aet="ORTHANC", config=tls.orthanc_config() if tls else None) as orthanc:
        orthanc_version = str(orthanc.get_json("/system")["Version"])
        idle = before = TreeSample.read(orthanc.pid)
        start, ack = send(orthanc.dicom_port, orthanc.aet, files, parallel, work / f"{target}-p{parallel}-scu", timeout,
                          tls.scu_options() if tls else ())
        count = lambda: int(orthanc.get_json("/statistics")["CountInstances"])  # noqa: E731
        try:
            wait_for("Orthanc instance count", lambda: count() >= len(files), min(timeout, 10.0))
        except BenchError as exc:
            raise BenchError(f"{exc}: Orthanc has {count()} of {len(files)} instances") from None
        e2e = time.perf_counter() - start
        after = TreeSample.read(orthanc.pid)
        if count() != len(files):
            raise BenchError(f"Orthanc: sent {len(files)}, has {count()} instances")
    return measured(target, parallel, len(files), ack, e2e, idle, before, after), orthanc_version


def bench_storescp(files: list[Path], parallel: int, work: Path, timeout: float) -> Run:
    """DCMTK ``storescp`` writing every instance to a fresh directory: the limit of this machine and disk.

    One process accepting one association at a time unless ``--fork`` (a child per association, as
    ``parallel`` needs); its CPU is its process tree's, the children's once they have exited.
    """
    out = work / f"storescp-p{parallel}"
    out.mkdir(parents=True)
    port = free_port()
    log_path = work / f"storescp-p{parallel}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [dcmtk_binary("storescp"), "--fork", "-aet", "STORESCP", "-od", str(out), str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=out,
            env={**os.environ, **DCMTK_ENV}, start_new_session=True)
    try:
        wait_for("storescp listening", lambda: _listening(port), 10.0)
        idle = before = TreeSample.read(proc.pid)
        start, ack = send(port, "STORESCP", files, parallel, work / f"storescp-p{parallel}-scu", timeout)
        stored = lambda: sum(1 for _ in out.iterdir())  # noqa: E731
        wait_for("storescp files", lambda: stored() >= len(files), min(timeout, 10.0))
        e2e = time.perf_counter() - start
        # A zombie counts: its CPU stays readable until storescp reaps it (at its next association).
        wait_for("storescp children finished", lambda: all(_finished(int(c)) for c in _children(proc.pid)), 30.0)
        after = TreeSample.read(proc.pid)
        if stored() != len(files):
            raise BenchError(f"storescp: sent {len(files)}, wrote {stored()} files\n{log_path.read_text()[-2000:]}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    return measured("storescp", parallel, len(files), ack, e2e, idle, before, after)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _finished(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True


def _children(pid: int) -> list[str]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return path.read_text().split() if path.exists() else []


def verdict(ratio: float, target: float | None) -> str:
    if target is None:
        return f"{ratio:5.2f}x"
    return f"{ratio:5.2f}x {'PASS' if ratio >= target else 'MISS'}"


def report(info: dict[str, Any], runs: list[Run], memory: list[Run], backend: str) -> list[dict[str, Any]]:
    m, d = info["machine"], info["data"]
    print(f"\nIngest benchmark, {info['date']}")
    print(f"Machine:  {m['nproc']} CPUs (nproc), {m['cpu_model']}, {m['memory_gib']} GiB RAM, "
          f"load average at start {m['load_average'][0]:.2f}, at end {os.getloadavg()[0]:.2f}")
    print("Software: " + ", ".join(f"{k} {v}" for k, v in info["software"].items()))
    print(f"Data:     {d['instances']} CT instances, 512x512 16-bit, Explicit VR LE, "
          f"{d['mib_per_instance']:.2f} MiB each, sent by DCMTK storescu (TCP_NODELAY=1)\n")
    print(f"{'target':<11} {'assoc':>5} {'inst':>5} {'procs':>5} {'ack inst/s':>11} {'e2e inst/s':>11} "
          f"{'ack MiB/s':>10} {'CPU ms/inst':>12} {'idle RSS':>9} {'peak RSS':>9}  (RSS: largest of one process)")
    for r in runs:
        print(f"{r.target:<11} {r.associations:>5} {r.instances:>5} {r.processes:>5} {r.ack_rate:>11.1f} "
              f"{r.e2e_rate:>11.1f} {r.ack_rate * d['mib_per_instance']:>10.1f} {r.cpu_ms_per_instance:>12.2f} "
              f"{r.idle_rss_mib:>7.0f}Mi {r.peak_rss_mib:>7.0f}Mi")
    print("\nGateway per process: CPU ms per instance and peak RSS (VmHWM)")
    for r in runs:
        if r.target == "gateway":
            parts = ", ".join(f"{name} {1000 * r.cpu_seconds_by_process.get(name, 0.0) / r.instances:.2f} ms "
                              f"{peak:.0f}Mi" for name, peak in r.peak_rss_by_process.items())
            print(f"  {r.associations} assoc, workers={r.workers}: {parts}")
    ratios = []
    ack_target = TARGET_S3_ACK_RATIO if backend == "s3" else None
    print(f"\ngateway/Orthanc  assoc  ack{f' (target >= {ack_target}x)' if ack_target else ''}"
          f"  e2e (target >= {TARGET_E2E_RATIO[1]}x on 1, {TARGET_E2E_RATIO[4]}x on 4, local store)")
    for p in sorted({r.associations for r in runs if r.target == "orthanc"}):
        gw, orth = (next(r for r in runs if r.target == t and r.associations == p) for t in ("gateway", "orthanc"))
        ack, e2e = gw.ack_rate / orth.ack_rate, gw.e2e_rate / orth.e2e_rate
        e2e_target = TARGET_E2E_RATIO.get(p) if backend == "local" else None
        ratios.append({"associations": p, "ack_ratio": ack, "e2e_ratio": e2e,
                       "cpu_ratio": gw.cpu_ms_per_instance / orth.cpu_ms_per_instance if orth.cpu_seconds else None,
                       "ack_pass": None if ack_target is None else ack >= ack_target,
                       "e2e_pass": None if e2e_target is None else e2e >= e2e_target})
        print(f"{'':<16} {p:>5}  {verdict(ack, ack_target):<21} {verdict(e2e, e2e_target)}"
              f"   CPU per instance {gw.cpu_ms_per_instance / max(orth.cpu_ms_per_instance, 1e-9):.2f}x Orthanc's")
    scp = [r for r in runs if r.target == "storescp"]
    if scp:
        print(f"\ngateway/storescp assoc  ack (target >= {TARGET_STORESCP_ACK_RATIO}x on 4)  e2e")
    for limit in scp:
        gw = next(r for r in runs if r.target == "gateway" and r.associations == limit.associations)
        ack, e2e = gw.ack_rate / limit.ack_rate, gw.e2e_rate / limit.e2e_rate
        ratios.append({"associations": limit.associations, "storescp_ack_ratio": ack, "storescp_e2e_ratio": e2e,
                       "storescp_ack_pass": ack >= TARGET_STORESCP_ACK_RATIO if limit.associations == 4 else None})
        scp_target = TARGET_STORESCP_ACK_RATIO if limit.associations == 4 else None
        print(f"{'':<16} {limit.associations:>5}  {verdict(ack, scp_target):<21} {e2e:5.2f}x")
    print("\nGateway memory while receiving (1 association; VmHWM = peak resident set, largest of one process)")
    print(f"{'instances':>9} {'MiB sent':>9} {'workers':>7} {'idle RSS':>9} {'peak RSS':>9} {'peak-idle':>10}  per process")
    for r in memory:
        per = ", ".join(f"{name} {peak:.0f}Mi" for name, peak in r.peak_rss_by_process.items())
        print(f"{r.instances:>9} {r.instances * d['mib_per_instance']:>9.0f} {r.workers:>7} {r.idle_rss_mib:>7.0f}Mi "
              f"{r.peak_rss_mib:>7.0f}Mi {r.peak_rss_mib - r.idle_rss_mib:>8.0f}Mi  {per}")
    print("\nack = N / time until every storescu exited (all C-STORE responses received).\n"
          "e2e = N / time until stored and indexed: gateway spool empty (in S3 + index); Orthanc\n"
          "      stores before acknowledging, so its e2e is its ack time plus one REST check.")
    return ratios


def int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers separated by commas")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500, metavar="N",
                        help="instances sent per throughput run (default: 500)")
    parser.add_argument("--parallel", type=int_list, default=[1, 4], metavar="P,P",
                        help="parallel associations to measure, comma-separated (default: 1,4)")
    parser.add_argument("--memory-counts", type=int_list, default=[500, 2000], metavar="N,N",
                        help="instance counts for the gateway memory runs (1 association; a throughput "
                             "run with the same N and 1 association is reused) (default: 500,2000)")
    parser.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS",
                        help="longest wait for one send, and for the gateway's spool to drain (default: 900)")
    parser.add_argument("--backend", choices=["s3", "local"], default="s3",
                        help="the gateway's object store: S3 on a SeaweedFS started here (default; the product "
                             "target), or the local object store (both sides then write to this machine's disk)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="the gateway's serve.workers (default: the product's, one worker per CPU, "
                             f"{os.cpu_count()} here; 1 is one process without a supervisor)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--orthanc", action=argparse.BooleanOptionalAction, default=True,
                        help="measure Orthanc in the same run (default: on; --no-orthanc for a profile only)")
    parser.add_argument("--storescp", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure DCMTK storescp (--fork, writing files to a temp dir) in the same run, "
                             "the limit of this machine (default: on)")
    parser.add_argument("--tls", action="store_true",
                        help="also run the gateway on its DICOM TLS port only and Orthanc with DicomTlsEnabled, "
                             "both fed by storescu +tls with a client certificate (bench/ingest_tls.py)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="attach py-spy to the gateway for each run and write its raw stacks to DIR")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work dir (input files, server data and logs) and print its path")
    args = parser.parse_args(argv)
    if args.count < 1 or max(args.parallel) > args.count:
        parser.error("--count must be at least 1 and at least the largest --parallel")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            "machine": machine(), "args": {**vars(args), "json": str(args.json), "profile": str(args.profile)}}
    runs: list[Run] = []
    memory: list[Run] = []
    try:
        with ExitStack() as stack:
            if args.keep:
                work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
                print(f"work dir (kept): {work}")
            else:
                work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ingest-")))
            total = max(args.count, *args.memory_counts)
            print(f"generating {total} synthetic CT instances (512x512, 16-bit) ...", flush=True)
            series = ct_series(total, size=512)
            study_uid = str(series[0].StudyInstanceUID)
            files = write_files(series, work / "input")
            del series
            mib = sum(f.stat().st_size for f in files[:args.count]) / args.count / 2**20
            info["data"] = {"instances": args.count, "mib_per_instance": mib}
            store = "S3 on SeaweedFS" if args.backend == "s3" else "local object store"
            info["software"] = {"gateway": version("pacs-gateway") + f" ({store}, SQLite index, serve.workers "
                                f"{args.workers or f'default ({os.cpu_count()})'})",
                                "DCMTK": subprocess.run([dcmtk_binary("storescu"), "--version"], capture_output=True,
                                                        text=True).stdout.split()[2]}
            s3 = None
            tls = TlsSetup.create(work / "pki") if args.tls else None
            if args.backend == "s3":
                print("starting SeaweedFS ...", flush=True)
                s3 = stack.enter_context(run_seaweedfs(work / "seaweedfs"))
            for p in args.parallel:
                print(f"gateway, {p} association(s), {args.count} instances ...", flush=True)
                runs.append(bench_gateway(s3, files[:args.count], study_uid, p, work, args.timeout,
                                          Profiler(args.profile), args.workers))
                if args.orthanc:
                    print(f"Orthanc, {p} association(s), {args.count} instances ...", flush=True)
                    run, info["software"]["Orthanc"] = bench_orthanc(files[:args.count], p, work, args.timeout)
                    info["software"]["Orthanc"] += " (SQLite index + filesystem storage)"
                    runs.append(run)
                if tls is not None:
                    print(f"gateway over DICOM TLS, {p} association(s), {args.count} instances ...", flush=True)
                    runs.append(bench_gateway(s3, files[:args.count], study_uid, p, work, args.timeout,
                                              workers=args.workers, tls=tls))
                    if args.orthanc:
                        print(f"Orthanc over DICOM TLS, {p} association(s), {args.count} instances ...", flush=True)
                        runs.append(bench_orthanc(files[:args.count], p, work, args.timeout, tls)[0])
                if args.storescp:
                    print(f"storescp, {p} association(s), {args.count} instances ...", flush=True)
                    runs.append(bench_storescp(files[:args.count], p, work, args.timeout))
            for n in args.memory_counts:
                same = [r for r in runs if r.target == "gateway" and r.associations == 1 and r.instances == n]
                if not same:
                    print(f"gateway memory run, 1 association, {n} instances ...", flush=True)
                    same = [bench_gateway(s3, files[:n], study_uid, 1, work, args.timeout, workers=args.workers)]
                memory.append(same[0])
    except BenchError as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    ratios = report(info, runs, memory, args.backend)
    if args.tls:
        ratios += report_tls(runs)
    if args.json:
        info.update(runs=[r.as_json() for r in runs], ratios=ratios, memory=[r.as_json() for r in memory])
        args.json.write_text(json.dumps(info, indent=2) + "\n")
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
