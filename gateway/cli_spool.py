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
    drain.add_argument("spool_dir", type=Path, metavar="DIR", help="the spool directory (no running process may own it)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.ingest.committer import Committer
    from gateway.ingest.drain import NotASpool, drain, open_spool
    from gateway.ingest.spool_files import SpoolLocked
    from gateway.service import open_index, open_object_store

    directory: Path = args.spool_dir
    if directory.resolve() == settings.spool_path.resolve():
        print(f"pacs-gateway spool drain: {directory} is this gateway's own spool; its spool worker files it", file=sys.stderr)
        return EXIT_FAILED
    try:
        spool = open_spool(directory, segment_bytes=settings.spool.segment_bytes)
    except (NotASpool, SpoolLocked) as exc:
        print(f"pacs-gateway spool drain: {exc}", file=sys.stderr)
        return EXIT_FAILED
    index = open_index(settings)
    committer = Committer(
        open_object_store(settings),
        index,
        on_duplicate=settings.ingest.on_duplicate,
        upload_concurrency=settings.spool.upload_concurrency,
    )
    try:
        summary = drain(spool, committer, batch_instances=settings.spool.batch_instances)
    finally:
        spool.close()
        committer.close()
        index.close()
    print(f"filed:      {summary.filed}")
    print(f"duplicates: {summary.duplicates}")
    print(f"set aside:  {summary.set_aside}")
    if summary.set_aside:
        print(f"  damaged or unreadable records are kept in {directory / 'quarantine'} and {directory / 'dead-letter'}")
    if summary.stopped:
        print(f"pacs-gateway spool drain: stopped: {summary.stopped}; what is left stays in {directory}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_SET_ASIDE if summary.set_aside else EXIT_OK
