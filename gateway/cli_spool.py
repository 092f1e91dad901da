"""``pacs-gateway spool drain DIR``: file the spool of a node that is never coming back (its disk mounted here)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_SET_ASIDE = 2


def add_commands(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    spool = sub.add_parser("spool", help="work on a spool directory")
    common(spool)
    actions = spool.add_subparsers(dest="spool_command", required=True)
    drain = actions.add_parser(
        "drain", help="file every instance of another node's spool into this gateway's object store and index"
    )
    common(drain)
    drain.add_argument("spool_dir", type=Path, metavar="DIR", help="the spool directory, or a node's spool folder with its worker-<i> spools (no running process may own them)")


def spools_in(directory: Path) -> list[Path]:
    """The spools a node left in ``directory``: the directory itself when it is one, and its ``worker-<i>`` spools
    (``serve --workers N`` gives each worker its own)."""
    found = [directory] if any(directory.glob("seg-*.log")) or (directory / "checkpoint").exists() else []
    return found + sorted(p for p in directory.glob("worker-*") if p.is_dir())


def run(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.ingest.drain import DrainSummary, NotASpool, drain, open_spool
    from gateway.ingest.spool_files import SpoolLocked
    from gateway.service import open_committer, open_index, open_object_store

    directory: Path = args.spool_dir
    own = settings.spool_path.resolve()
    if directory.resolve() == own or own in directory.resolve().parents:
        print(f"pacs-gateway spool drain: {directory} is this gateway's own spool; its spool worker files it", file=sys.stderr)
        return EXIT_FAILED
    if not directory.is_dir():
        print(f"pacs-gateway spool drain: {directory} is not a directory", file=sys.stderr)
        return EXIT_FAILED
    spools = []
    try:
        for path in spools_in(directory) or [directory]:  # none found: open_spool says why
            spools.append(open_spool(path, segment_bytes=settings.spool.segment_bytes))
    except (NotASpool, SpoolLocked) as exc:
        for spool in spools:
            spool.close()
        print(f"pacs-gateway spool drain: {exc}", file=sys.stderr)
        return EXIT_FAILED
    index = open_index(settings)
    committer = open_committer(settings, open_object_store(settings), index)
    summary = DrainSummary()
    try:
        for spool in spools:
            part = drain(spool, committer, batch_instances=settings.spool.batch_instances)
            summary.filed += part.filed
            summary.duplicates += part.duplicates
            summary.set_aside += part.set_aside
            if part.set_aside:
                print(f"  {spool.directory}: damaged or unreadable records are kept in its quarantine/ and dead-letter/")
            if part.stopped:
                summary.stopped = f"{spool.directory}: {part.stopped}"
                break
    finally:
        for spool in spools:
            spool.close()
        committer.close()
        index.close()
    print(f"filed:      {summary.filed}")
    print(f"duplicates: {summary.duplicates}")
    print(f"set aside:  {summary.set_aside}")
    if summary.stopped:
        print(f"pacs-gateway spool drain: stopped: {summary.stopped}; what is left stays in the spool", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_SET_ASIDE if summary.set_aside else EXIT_OK
