"""CPU per received instance, stage by stage, in one process (no network): where the gateway's time goes.

The same synthetic 512x512 16-bit CT instances as ``bench/ingest.py`` go through
the receive path's stages as the gateway runs them (product defaults, local
object store, SQLite index, all in a temp dir): validation and the rules stage
(``RulesStage.receive``, identified; ``--rules`` for a rules file), the spool
record's metadata and the durable append, then filing in batches of 64
(``Committer.commit``: object put and index commit).  Reported: CPU ms
(``time.process_time``, this process's threads) per instance per stage; the
transport (PDU reassembly, DIMSE command, ack) is not included: ``bench/ingest.py``
measures the whole gateway process.

    .venv/bin/python -m bench.ingest_cpu [--count 300] [--profile STAGE]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dicom_rules.rules import RuleSet, load_rules  # noqa: E402
from gateway.ingest.committer import Committer  # noqa: E402
from gateway.ingest.instance import ReceivedInstance  # noqa: E402
from gateway.ingest.rules_stage import RulesStage  # noqa: E402
from gateway.ingest.spool import SpoolLog  # noqa: E402
from storage.index.database import IndexDatabase  # noqa: E402
from storage.object_store.local import LocalObjectStore  # noqa: E402
from tests.factory import ct_series, to_bytes  # noqa: E402

STAGES = ("receive", "spool", "file")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300, help="instances (default: 300)")
    parser.add_argument("--rules", type=Path, help="a rules file (default: none, every instance identified)")
    parser.add_argument("--secret", default="bench-secret-bench-secret-bench-secret", help="de-identification secret")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the median per stage is reported (default: 3)")
    parser.add_argument("--profile", choices=STAGES, help="print the cProfile of this stage (last run)")
    parser.add_argument("--sort", default="cumulative", help="cProfile sort key (default: cumulative)")
    args = parser.parse_args(argv)
    blobs = [to_bytes(ds) for ds in ct_series(args.count, size=512)]
    rules = load_rules(args.rules) if args.rules else RuleSet(())
    results: dict[str, list[float]] = {s: [] for s in STAGES}
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-ingest-cpu-") as tmp:
            work = Path(tmp)
            stage = RulesStage(rules, secret=args.secret.encode(), quarantine_dir=None)
            spool = SpoolLog(work / "spool", segment_bytes=64 << 20, max_bytes=64 << 30, min_free_bytes=0,
                             preallocated_segments=2).open()
            index = IndexDatabase.open(f"sqlite:///{work / 'index.db'}")
            committer = Committer(LocalObjectStore(work / "objects"), index, on_duplicate="keep_first",
                                  upload_concurrency=8)
            received: list[ReceivedInstance] = []
            profiles = {s: cProfile.Profile() for s in STAGES}

            def timed(name: str, fn) -> None:  # type: ignore[no-untyped-def]
                prof = profiles[name] if args.profile == name else None
                started = time.process_time()
                if prof:
                    prof.enable()
                fn()
                if prof:
                    prof.disable()
                results[name].append(1000 * (time.process_time() - started) / args.count)

            def receive() -> None:
                for data in blobs:
                    out = stage.receive(data, source_ae="BENCHSCU", peer="127.0.0.1")
                    assert isinstance(out, ReceivedInstance)
                    received.append(out)

            def spool_append() -> None:
                for item in received:
                    meta = {"record": item.record.to_dict(), "calling_ae": "BENCHSCU", "peer": "127.0.0.1",
                            "received_at": time.time()}
                    spool.append(meta, item.data)

            def file() -> None:
                for start in range(0, len(received), 64):
                    committer.commit(received[start:start + 64])

            timed("receive", receive)
            timed("spool", spool_append)
            timed("file", file)
            committer.close()
            spool.close()
            index.engine.dispose()
            if args.profile:
                pstats.Stats(profiles[args.profile]).sort_stats(args.sort).print_stats(45)
    print(f"{args.count} instances, {args.repeat} runs; CPU ms per instance (median, all runs):")
    for name in STAGES:
        values = sorted(results[name])
        print(f"  {name:<8} {values[len(values) // 2]:6.3f}   ({', '.join(f'{v:.3f}' for v in results[name])})")
    total = sum(sorted(v)[len(v) // 2] for v in results.values())
    print(f"  {'total':<8} {total:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
