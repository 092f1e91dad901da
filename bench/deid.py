"""De-identification benchmark: the gateway's engine against dicognito, on the same files in one run.

A planted-PHI corpus (``tests/dicom_rules/phi_corpus.py``: N 512x512 16-bit CT
Part 10 files, each with 40 planted identifying values and 8 planted UIDs) is
written once to a temporary folder, not timed. Then, single process, each tool
de-identifies the whole folder into a fresh output folder:

- ours, anonymised: ``gateway.anonymise.anonymise_paths`` through a ``RulesStage``
  whose rules say ``mode = "anonymised"`` (PS3.15 Basic Profile, no options);
- ours, pseudonymised: the same with ``mode = "pseudonymised"`` and its default
  options (modified dates, patient characteristics, clean descriptors; no vault
  is kept here);
- dicognito, as its CLI runs (``dicognito -o OUT IN`` with ``--quiet``): one
  ``Anonymizer()`` with default settings for the whole run, its default
  burned-in-annotation guard, ``dcmread``, ``anonymize``, ``save_as`` named by the
  new SOP Instance UID.

Each tool is warmed up on a few files first (not timed); the tools then take
turns, repeat after repeat, so machine noise hits all of them. Measured per tool:

- throughput: N / wall-clock seconds to read, de-identify and write all N files
  (page cache, no fsync by either tool; ``sync`` before each run, not timed);
  the median of the repeats is the headline figure (the best is shown too);
- survivors: every output file of every repeat is scanned with
  ``phi_corpus.surviving``; reported is the set of planted names found (of 48).

Target (product issue): ours >= 2x dicognito's throughput, zero planted values
surviving. A rejected file or a wrong output count aborts with exit status 1.

Run from the repository root:  ``.venv/bin/python bench/deid.py --count 500``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pydicom
from dicognito.anonymizer import Anonymizer
from dicognito.filters import BurnedInAnnotationGuard, SaveToSOPInstanceUID
from dicognito.pipeline import Pipeline

if __package__ in (None, ""):  # run as ``python bench/deid.py``: make ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine  # noqa: E402
from dicom_rules.rules import parse_rules  # noqa: E402
from gateway.anonymise import anonymise_paths  # noqa: E402
from gateway.ingest.rules_stage import RulesStage  # noqa: E402
from tests.dicom_rules.phi_corpus import PLANTED, PLANTED_UIDS, surviving, write_corpus  # noqa: E402

TARGET_RATIO = 2.0  # from the product issue: >= 2x dicognito, zero planted values surviving
PLANTED_TOTAL = len(PLANTED) + len(PLANTED_UIDS)
WARMUP_FILES = 5
SECRET = b"bench-secret-" + b"x" * 32

Runner = Callable[[Path, Path], int]  # (input folder, output folder) -> files written


class BenchError(RuntimeError):
    """A run failed (rejected file, wrong output count): no rate is reported for it."""


@dataclass
class Tool:
    key: str
    label: str
    run: Runner
    seconds: list[float] = field(default_factory=list)
    survivors: set[str] = field(default_factory=set)

    def rates(self, count: int) -> list[float]:
        return [count / s for s in self.seconds]

    def median(self, count: int) -> float:
        return statistics.median(self.rates(count))

    def as_json(self, count: int) -> dict[str, Any]:
        return {"label": self.label, "seconds": self.seconds, "rates": self.rates(count), "median_rate":
                self.median(count), "best_rate": max(self.rates(count)), "surviving": sorted(self.survivors)}


def ours(mode: str) -> Runner:
    stage = RulesStage(parse_rules(f'[defaults]\nmode = "{mode}"\n', "bench"), secret=SECRET, quarantine_dir=None)

    def run(source: Path, out: Path) -> int:
        summary = anonymise_paths([source], out, stage)
        problems = summary.rejected + summary.set_aside
        if problems:
            reasons = sorted({reason for _, reason in problems})
            raise BenchError(f"ours ({mode}): {len(problems)} file(s) not written: {reasons}")
        return summary.written

    return run


def dicognito() -> Runner:
    """dicognito's CLI loop (``dicognito/__main__.py``) with its defaults, ``--quiet`` and ``-o OUT``."""
    anonymizer = Anonymizer()  # one for the whole benchmark, as one CLI invocation uses one

    def run(source: Path, out: Path) -> int:
        pipeline = Pipeline()
        pipeline.add(BurnedInAnnotationGuard(BurnedInAnnotationGuard.ASSUME_IF_CHOICES[0],
                                             BurnedInAnnotationGuard.IF_FOUND_CHOICES[0]))
        pipeline.add(SaveToSOPInstanceUID(str(out)))
        pipeline.before_any()
        written = 0
        for dirpath, _, filenames in os.walk(source):
            for filename in filenames:
                with pydicom.dcmread(os.path.join(dirpath, filename), force=False) as dataset:
                    pipeline.before_each(dataset)
                    anonymizer.anonymize(dataset)
                    pipeline.after_each(dataset)
                written += 1
        pipeline.after_all()
        return written

    return run


def measure(tool: Tool, source: Path, out: Path, count: int, keep: bool) -> float:
    """One timed run of ``tool`` over ``source``; checks the output count and scans it for planted values."""
    os.sync()  # flush earlier runs' writes first, so their writeback does not land in this run
    start = time.perf_counter()
    written = tool.run(source, out)
    seconds = time.perf_counter() - start
    files = sorted(out.rglob("*.dcm"))
    if written != count or len(files) != count:
        raise BenchError(f"{tool.label}: {count} input files, {written} reported written, {len(files)} on disk")
    for path in files:
        tool.survivors.update(surviving(path.read_bytes()))
    if not keep:
        shutil.rmtree(out)
    return seconds


def report(info: dict[str, Any], tools: list[Tool]) -> list[dict[str, Any]]:
    m, d = info["machine"], info["data"]
    print(f"\nDe-identification benchmark, {info['date']}")
    print(f"Machine:  {m['nproc']} CPUs (nproc), {m['cpu_model']}, {m['memory_gib']} GiB RAM, "
          f"load average at start {m['load_average'][0]:.2f}, at end {os.getloadavg()[0]:.2f}")
    print("Software: " + ", ".join(f"{k} {v}" for k, v in info["software"].items()))
    print(f"Data:     {d['instances']} planted-PHI CT instances, 512x512 16-bit, Explicit VR LE, "
          f"{d['mib_per_instance']:.2f} MiB each; {d['repeats']} repeats, single process\n")
    n, width, reference = d["instances"], max(len(t.label) for t in tools), tools[-1]
    print(f"{'tool':<{width}}  {'median inst/s':>13}  {'best inst/s':>11}  {'all repeats (inst/s)':<24} "
          f"surviving (of {PLANTED_TOTAL})")
    for t in tools:
        print(f"{t.label:<{width}}  {t.median(n):>13.1f}  {max(t.rates(n)):>11.1f}  "
              f"{', '.join(f'{r:.1f}' for r in t.rates(n)):<24} {len(t.survivors)}")
    ratios = []
    print(f"\nours/dicognito (target: >= {TARGET_RATIO:g}x and 0 planted values surviving)")
    for t in tools[:-1]:
        median, best = t.median(n) / reference.median(n), max(t.rates(n)) / max(reference.rates(n))
        met = median >= TARGET_RATIO and not t.survivors
        ratios.append({"tool": t.key, "median_ratio": median, "best_ratio": best, "target_met": met})
        print(f"  {t.label:<{width}} median {median:5.2f}x, best {best:5.2f}x, "
              f"{len(t.survivors)} surviving: {'PASS' if met else 'MISS'}")
    print("\nPlanted values surviving, by tool:")
    for t in tools:
        print(f"  {t.label}: {', '.join(sorted(t.survivors)) or 'none'}")
    return ratios


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/deid.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500, metavar="N",
                        help="instances de-identified per run (default: 500)")
    parser.add_argument("--repeat", type=int, default=3, metavar="R",
                        help="timed runs per tool, taken in turns; the median is reported (default: 3)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work dir (corpus and every output folder) and print its path")
    args = parser.parse_args(argv)
    if args.count < 1 or args.repeat < 1:
        parser.error("--count and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            "machine": machine(), "args": {**vars(args), "json": str(args.json)},
                            "software": {"Python": sys.version.split()[0], "pydicom": pydicom.__version__,
                                         "dicognito": version("dicognito"), "gateway": version("pacs-gateway")}}
    tools = [
        Tool("ours_anonymised", "ours: anonymised (basic profile)", ours("anonymised")),
        Tool("ours_pseudonymised", "ours: pseudonymised (default options)", ours("pseudonymised")),
        Tool("dicognito", f"dicognito {version('dicognito')} (defaults)", dicognito()),
    ]
    order = [tools[0], tools[2], tools[1]]  # dicognito between ours, every repeat
    work = Path(tempfile.mkdtemp(prefix="bench-deid-"))
    if args.keep:
        print(f"work dir (kept): {work}")
    try:
        print(f"writing {args.count} planted-PHI CT instances (512x512, 16-bit) ...", flush=True)
        files = write_corpus(work / "input", args.count)
        write_corpus(work / "warmup", WARMUP_FILES)
        info["data"] = {"instances": args.count, "repeats": args.repeat,
                        "mib_per_instance": sum(f.stat().st_size for f in files) / len(files) / 2**20}
        for tool in order:
            tool.run(work / "warmup", work / f"warmup-{tool.key}")
        for rep in range(1, args.repeat + 1):
            for tool in order:
                print(f"repeat {rep}/{args.repeat}: {tool.label} ...", end=" ", flush=True)
                seconds = measure(tool, work / "input", work / f"out-{tool.key}-{rep}", args.count, args.keep)
                tool.seconds.append(seconds)
                print(f"{args.count / seconds:.1f} inst/s", flush=True)
    except BenchError as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    ratios = report(info, tools)
    if args.json:
        info.update(tools={t.key: t.as_json(args.count) for t in tools}, ratios=ratios)
        args.json.write_text(json.dumps(info, indent=2) + "\n")
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
