"""Command line: ``pacs-gateway serve | import | anonymise | vault | quarantine | user | spool | tls | config``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.cli_deid import add_commands as add_deid_commands
from gateway.cli_deid import run_anonymise, run_quarantine, run_vault
from gateway.cli_users import add_commands as add_user_commands
from gateway.cli_users import run as run_users
from gateway.cli_spool import add_commands as add_spool_commands
from gateway.cli_spool import run as run_spool
from gateway.cli_tls import add_commands as add_tls_commands
from gateway.cli_tls import run as run_tls
from gateway.logging_setup import configure_logging
from gateway.settings import (
    Settings,
    SettingsError,
    load_settings,
    redacted,
    reference_markdown,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_SOME_REJECTED = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pacs-gateway", description="RIS-PACS gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        # SUPPRESS: a command with subcommands takes these before and after its subcommand
        # (`user --data-dir D add ...` and `user add ... --data-dir D`); an absent one sets nothing.
        p.add_argument("--config", metavar="FILE.toml", default=argparse.SUPPRESS, help="settings file (TOML)")
        p.add_argument(
            "--data-dir", default=argparse.SUPPRESS, help="data directory (spool, SQLite index, local object store)"
        )

    serve = sub.add_parser("serve", help="run the DICOM SCP, the spool worker and the HTTP server")
    common(serve)
    serve.add_argument("--dicom-port", type=int, help="DICOM SCP port (default 11112)")
    serve.add_argument("--ae-title", help="AE title of the SCP (default PACSGW)")
    serve.add_argument("--http-port", type=int, help="HTTP port (default 8042)")
    serve.add_argument(
        "--workers", type=int, metavar="N", help="worker processes sharing the ports (default: one per CPU; 1: one process)"
    )
    serve.add_argument("--child", help=argparse.SUPPRESS)  # a supervised process (gateway.worker_process)

    imp = sub.add_parser("import", help="import DICOM files or folders through the ingest pipeline")
    common(imp)
    imp.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")

    add_deid_commands(sub, common)
    add_user_commands(sub, common)
    add_spool_commands(sub, common)
    add_tls_commands(sub)

    cfg = sub.add_parser("config", help="print the effective settings (secrets masked)")
    common(cfg)
    cfg.add_argument("--reference", action="store_true", help="print the reference of every option (Markdown)")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    dicom = {k: v for k, v in (("port", getattr(args, "dicom_port", None)), ("ae_title", getattr(args, "ae_title", None))) if v is not None}
    if dicom:
        overrides["dicom"] = dicom
    if getattr(args, "http_port", None) is not None:
        overrides["http"] = {"port": args.http_port}
    if getattr(args, "workers", None) is not None:
        overrides["serve"] = {"workers": args.workers}
    return load_settings(getattr(args, "config", None), overrides=overrides)


def _run_import(settings: Settings, paths: list[Path], progress: bool) -> int:
    from tqdm import tqdm

    from dicom_rules.rules import RulesError
    from gateway.ingest.importer import import_paths, iter_files
    from gateway.service import open_committer, open_index, open_object_store, open_rules_stage

    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"pacs-gateway import: no such file or folder: {missing[0]}", file=sys.stderr)
        return EXIT_FAILED
    total = sum(1 for _ in iter_files(paths))
    try:
        rules = open_rules_stage(settings)
    except (RulesError, SettingsError) as exc:
        print(f"pacs-gateway import: {exc}", file=sys.stderr)
        return EXIT_FAILED
    index = open_index(settings)
    committer = open_committer(settings, open_object_store(settings), index)
    bar = tqdm(total=total, unit="file", disable=not progress, file=sys.stderr)
    try:
        summary = import_paths(
            paths, committer, batch_size=settings.spool.batch_instances, on_progress=bar.update, rules=rules
        )
    except Exception as exc:
        bar.close()
        print(f"pacs-gateway import: stopped: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        committer.close()
        index.close()
    bar.close()
    print(f"imported:   {summary.imported}")
    if summary.replaced:
        print(f"replaced:   {summary.replaced}")
    print(f"duplicates: {summary.duplicates}")
    if summary.quarantined:
        print(f"quarantined: {summary.quarantined}")
    print(f"rejected:   {len(summary.rejected)}")
    for reason, count in summary.reasons().most_common():
        print(f"  {count:6d}  {reason}")
    for path, reason in summary.rejected[:20]:
        print(f"    {path}: {reason}")
    if len(summary.rejected) > 20:
        print(f"    ... and {len(summary.rejected) - 20} more")
    return EXIT_SOME_REJECTED if summary.rejected else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "child", None):
        from gateway.worker_process import run_child

        return run_child(args.child)
    if args.command == "tls":  # needs no settings
        return run_tls(args)
    if args.command == "config" and args.reference:
        sys.stdout.write(reference_markdown())
        return EXIT_OK
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"pacs-gateway: configuration error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    configure_logging(settings.log_level)
    if args.command == "config":
        print(json.dumps(redacted(settings), indent=2))
        return EXIT_OK
    if args.command == "import":
        return _run_import(settings, args.paths, progress=not args.no_progress)
    if args.command == "anonymise":
        return run_anonymise(settings, args)
    if args.command == "vault":
        return run_vault(settings, args)
    if args.command == "quarantine":
        return run_quarantine(settings, args)
    if args.command == "user":
        return run_users(settings, args)
    if args.command == "spool":
        return run_spool(settings, args)
    from gateway.service import serve

    try:
        serve(settings)
    except Exception as exc:  # start-up failures: a clear line, not a trace
        print(f"pacs-gateway: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
