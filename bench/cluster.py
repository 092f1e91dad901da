"""Cluster benchmark: 1, 2 and 3 gateway nodes behind HAProxy, on one PostgreSQL index and one S3 bucket.

Everything runs on this machine, on free ephemeral ports, and is torn down on exit:
a private PostgreSQL cluster, SeaweedFS (S3), Debian's HAProxy (TCP mode for DICOM)
and N nodes (``python -m gateway serve``, product defaults but one process each
when the gateway reads ``serve.workers``). Each N starts from an empty database
and bucket. The same N files go through the balancer on P DCMTK ``storescu``
associations (the same P for every N, so that only the number of nodes changes).

Measured per N:

- acknowledged rate: N files / seconds until every storescu exited;
- end-to-end rate: N files / seconds until every node's spool is empty and the
  index holds every instance;
- CPU ms per instance: utime+stime (``/proc/<pid>/stat``, children included) of
  every node's processes over the run, summed and divided by the instances, and
  each node's share; also less what the node burns idle (measured over 5 s
  before sending: timers, the balancer's health checks); the same for HAProxy, PostgreSQL (the postmaster and its
  children) and SeaweedFS, for sizing the machines they would get of their own.

On a 2-core machine the aggregate cannot grow with N; what must hold is that every
instance is stored once and that the cost per instance does not grow with N.
After the last N the index's bytes per instance (tables with their indexes,
``pg_total_relation_size``) are reported, for sizing.

Run from the repository root:  ``.venv/bin/python -m bench.cluster [--help]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python bench/cluster.py``: make ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402

from bench.common import machine  # noqa: E402
from bench.ingest import TEST_ONLY_ENV, BenchError, send, wait_for  # noqa: E402
from tests.cluster import cpu_seconds, node_pids, run_site  # noqa: E402
from tests.conftest import s3_env  # noqa: E402
from tests.factory import ct_series, write_files  # noqa: E402
from tests.peers.postgres import PostgresServer, run_postgres  # noqa: E402
from tests.peers.seaweedfs import S3Server, run_seaweedfs  # noqa: E402


IDLE_SECONDS = 5.0


def index_bytes(url: str) -> dict[str, Any]:
    """Rows and bytes (heap, TOAST and indexes) of every index table holding rows; per instance overall."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(sa.text(
                "SELECT c.relname, pg_total_relation_size(c.oid), pg_indexes_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'"
            )).all()  # fmt: skip
            rows = {name: conn.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar_one() for name, _, _ in tables}
            database = conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one()
    finally:
        engine.dispose()
    instances = rows.get("instances", 0) or 1
    per_table = {
        name: {"rows": rows[name], "bytes": total, "index_bytes": indexes, "bytes_per_instance": round(total / instances)}
        for name, total, indexes in sorted(tables, key=lambda t: -t[1])
        if rows[name]
    }
    return {
        "instances": rows.get("instances", 0),
        "studies": rows.get("studies", 0),
        "series": rows.get("series", 0),
        "tables_bytes_per_instance": round(sum(t["bytes"] for t in per_table.values()) / instances),
        "database_bytes": database,
        "tables": per_table,
    }


def postgres_pids(pg: PostgresServer) -> list[int]:
    """The postmaster (from its pid file) and its children: backends that exit are counted in its cutime."""
    with pg.connect() as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    assert row is not None
    postmaster = int((Path(row[0]) / "postmaster.pid").read_text().split()[0])
    return descendants(postmaster)


def descendants(pid: int) -> list[int]:
    pids, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        pids.append(current)
        try:
            frontier.extend(int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split())
        except OSError:
            pass
    return pids


def run_nodes(count: int, pg: PostgresServer, s3: S3Server, files: list[Path], parallel: int, work: Path,
              timeout: float) -> tuple[dict[str, Any], str]:  # fmt: skip
    bucket = f"bench-cluster-{uuid.uuid4().hex[:10]}"
    url = pg.create_database(f"bench_cluster_{uuid.uuid4().hex[:10]}")
    env = {k: v for k, v in s3_env(s3, bucket).items() if k not in TEST_ONLY_ENV}
    env["PACSGW_INDEX_URL"] = url
    engine = sa.create_engine(url)
    try:
        with run_site(work / f"n{count}", count, env, product_defaults=True) as site:
            pids = [node_pids(node) for node in site.nodes]
            # What a node costs doing nothing (timers, the balancer's checks), over a fixed idle window.
            idle_start, idle_t0 = [cpu_seconds(p) for p in pids], time.perf_counter()
            time.sleep(IDLE_SECONDS)
            idle_rates = [(cpu_seconds(p) - b) / (time.perf_counter() - idle_t0) for p, b in zip(pids, idle_start)]
            before = [cpu_seconds(p) for p in pids]
            lb_before = cpu_seconds([site.lb.proc.pid])
            pg_before = cpu_seconds(postgres_pids(pg))
            s3_before = cpu_seconds(descendants(s3._process.pid)) if s3._process else 0.0
            start, ack_seconds = send(site.lb.dicom_port, site.nodes[0].ae_title, files, parallel, work / f"logs-{count}", timeout)

            def indexed() -> bool:
                with engine.connect() as conn:
                    return conn.execute(sa.text("SELECT count(*) FROM instances")).scalar_one() >= len(files)

            wait_for("every instance indexed", indexed, timeout)
            site.wait_idle(timeout)
            e2e_seconds = time.perf_counter() - start
            # Descendants started since (a supervisor's workers) count too.
            after = [cpu_seconds(node_pids(node)) for node in site.nodes]
            lb_cpu = cpu_seconds([site.lb.proc.pid]) - lb_before
            pg_cpu = cpu_seconds(postgres_pids(pg)) - pg_before
            s3_cpu = (cpu_seconds(descendants(s3._process.pid)) if s3._process else 0.0) - s3_before
            objects = sum(1 for _ in s3.client().list_objects(bucket, recursive=True))
            if objects != len(files):
                raise BenchError(f"{count} nodes: {objects} objects in the bucket for {len(files)} instances")
    finally:
        engine.dispose()
    per_node = [round((a - b) * 1000 / len(files), 2) for a, b in zip(after, before)]
    busy = [(a - b - rate * e2e_seconds) * 1000 / len(files) for a, b, rate in zip(after, before, idle_rates)]
    return {
        "nodes": count,
        "instances": len(files),
        "associations": parallel,
        "ack_rate": round(len(files) / ack_seconds, 1),
        "e2e_rate": round(len(files) / e2e_seconds, 1),
        "cpu_ms_per_instance": round(sum(per_node), 2),
        "cpu_ms_per_instance_by_node": per_node,
        "cpu_ms_per_instance_less_idle": round(sum(busy), 2),
        "idle_cpu_ms_per_second_by_node": [round(rate * 1000, 1) for rate in idle_rates],
        "haproxy_cpu_ms_per_instance": round(lb_cpu * 1000 / len(files), 3),
        "postgres_cpu_ms_per_instance": round(pg_cpu * 1000 / len(files), 2),
        "seaweedfs_cpu_ms_per_instance": round(s3_cpu * 1000 / len(files), 2),
    }, url


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--instances", type=int, default=900, help="instances sent for every node count (default 900)")
    parser.add_argument("--size", type=int, default=256, help="rows = columns of the synthetic CT slices (default 256: 128 KiB)")
    parser.add_argument("--nodes", default="1,2,3", help="node counts to run, comma-separated (default 1,2,3)")
    parser.add_argument("-p", "--associations", type=int, default=6, help="parallel storescu associations (default 6)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per node count (default 1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per run (default 600)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(n) for n in args.nodes.split(",") if n.strip()]
    info = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine()}
    print(json.dumps(info))
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        files = write_files(ct_series(args.instances, size=args.size), work / "files")
        pg = stack.enter_context(run_postgres(work / "pg"))
        s3 = stack.enter_context(run_seaweedfs(work / "s3"))
        url = ""
        try:
            for repeat in range(args.repeat):
                for count in counts:
                    run, url = run_nodes(count, pg, s3, files, args.associations, work / f"r{repeat}", args.timeout)
                    runs.append(run)
                    print(json.dumps(run), flush=True)
        except BenchError as exc:
            print(json.dumps({"error": str(exc)}))
            return 1
        sizes = index_bytes(url)
        print(json.dumps({"index_after_last_run": sizes}))
    base = [r for r in runs if r["nodes"] == counts[0]]
    if base:
        cost = sum(r["cpu_ms_per_instance"] for r in base) / len(base)
        for count in counts:
            mine = [r["cpu_ms_per_instance"] for r in runs if r["nodes"] == count]
            print(json.dumps({"nodes": count, "cpu_per_instance_vs_first": round(sum(mine) / len(mine) / cost, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
