"""Command line for de-identification: ``anonymise`` and ``vault``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dicom_rules.engine import Mode
from dicom_rules.rules import RulesError, RuleSet, load_rules, parse_rules
from dicom_rules.vault import VaultSealError
from gateway.settings import Settings, SettingsError

if TYPE_CHECKING:
    from storage.index.accounts import AccountStore

EXIT_OK, EXIT_FAILED, EXIT_SOME_REJECTED = 0, 1, 2
# Without a rules file, offline anonymisation applies the Basic Profile with no options.
DEFAULT_OFFLINE_RULES = '[defaults]\nmode = "anonymised"\n'


def add_commands(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    anon = sub.add_parser("anonymise", help="de-identify DICOM files or folders into a folder")
    common(anon)
    anon.add_argument("input", type=Path, metavar="IN", help="DICOM file or folder")
    anon.add_argument("output", type=Path, metavar="OUT", help="folder for the de-identified files")
    anon.add_argument("--rules", type=Path, metavar="FILE", help="rules file (default: deid.rules_file, else the Basic Profile, anonymised)")
    anon.add_argument("--destination", default="export", help="destination name the rules are matched against (default export)")
    anon.add_argument("--calling-ae", default="", help="calling AE title the rules are matched against")
    anon.add_argument(
        "--secret-file",
        type=Path,
        metavar="FILE",
        help="file whose first line is the secret (at least 32 characters), for the same UIDs and pseudonyms on every "
        "run; overrides deid.secret (default: deid.secret, else a fresh random key for this run when anonymising)",
    )
    anon.add_argument("--no-progress", action="store_true", help="no progress bar")

    vault = sub.add_parser("vault", help="pseudonym vault: find and reveal pseudonyms")
    common(vault)
    actions = vault.add_subparsers(dest="vault_command", required=True)
    find = actions.add_parser("find", help="pseudonymous patient IDs of an original patient ID (or citizen ID, insurance number)")
    find.add_argument("patient_id")
    reveal = actions.add_parser("reveal", help="what a pseudonym stands for")
    reveal.add_argument("pseudonym")
    reveal.add_argument("--kind", choices=("patient", "study", "series", "instance"), default="patient")
    common(find)
    common(reveal)

    quarantine = sub.add_parser("quarantine", help="instances a rule set aside: list them, export one for review")
    common(quarantine)
    q_actions = quarantine.add_subparsers(dest="quarantine_command", required=True)
    q_actions.add_parser("list", help="id, time, rule, reason and calling AE of each quarantined instance")
    export = q_actions.add_parser("export", help="write one quarantined instance (decrypted) to a file")
    export.add_argument("id")
    export.add_argument("file", type=Path)
    for action in q_actions.choices.values():
        common(action)


def _rules(settings: Settings, path: Path | None) -> RuleSet:
    if path is not None:
        return load_rules(path)
    if settings.deid.rules_file:
        return load_rules(settings.deid.rules_file)
    return parse_rules(DEFAULT_OFFLINE_RULES, "built-in defaults")


def _secret(settings: Settings, secret_file: Path | None, mode: Mode) -> bytes:
    """The secret for this run: --secret-file, else the settings', else (anonymising only) a fresh random key."""
    if secret_file is not None:
        settings = dataclasses.replace(settings, deid=dataclasses.replace(settings.deid, secret="", secret_file=str(secret_file)))
    secret = settings.deid_secret()
    if secret is not None:
        return secret
    if mode is Mode.PSEUDONYMISED:
        raise SettingsError(
            "pseudonymising needs a secret, the one the vault is sealed with (deid.secret, deid.secret_file, "
            "PACSGW_DEID_SECRET or --secret-file)"
        )
    print(
        "pacs-gateway anonymise: no secret given, so this run uses a fresh random key: UIDs and pseudonyms will "
        "differ from any other run's (give --secret-file FILE for the same ones every time)",
        file=sys.stderr,
    )
    return secrets.token_hex(32).encode("ascii")


def run_anonymise(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from gateway.anonymise import anonymise_paths
    from gateway.ingest.importer import iter_files
    from gateway.ingest.rules_stage import RulesStage
    from gateway.service import open_index

    if not args.input.exists():
        print(f"pacs-gateway anonymise: no such file or folder: {args.input}", file=sys.stderr)
        return EXIT_FAILED
    try:
        rules = _rules(settings, args.rules)
        mode = rules.mode_for(calling_ae=args.calling_ae, destination=args.destination)
        if mode is Mode.IDENTIFIED:
            raise SettingsError("the rules keep these instances identified; nothing would be de-identified")
        secret = _secret(settings, args.secret_file, mode)
        stage = RulesStage(rules, secret=secret, date_shift_max_days=settings.deid.date_shift_max_days, quarantine_dir=None)
    except (RulesError, SettingsError, ValueError) as exc:
        print(f"pacs-gateway anonymise: {exc}", file=sys.stderr)
        return EXIT_FAILED
    index = open_index(settings) if mode is Mode.PSEUDONYMISED else None
    total = sum(1 for _ in iter_files([args.input]))
    bar = tqdm(total=total, unit="file", disable=args.no_progress, file=sys.stderr)
    try:
        summary = anonymise_paths(
            [args.input],
            args.output,
            stage,
            calling_ae=args.calling_ae,
            destination=args.destination,
            on_progress=bar.update,
            keep_vault=index.add_vault_entries if index else None,
        )
    finally:
        bar.close()
        if index is not None:
            index.close()
    print(f"mode:       {mode.value}")
    print(f"written:    {summary.written}")
    if index is not None:
        print(f"vault:      {summary.vault_entries} entries kept in the index database")
    print(f"set aside:  {len(summary.set_aside)}")
    for path, reason in summary.set_aside[:20]:
        print(f"    {path}: {reason}")
    print(f"rejected:   {len(summary.rejected)}")
    for reason, count in summary.reasons().most_common():
        print(f"  {count:6d}  {reason}")
    return EXIT_SOME_REJECTED if summary.rejected else EXIT_OK


def run_vault(settings: Settings, args: argparse.Namespace) -> int:
    from dicom_rules.pseudonyms import derive
    from gateway.audit import audit_digest
    from gateway.service import open_index
    from gateway.vault import PseudonymVault
    from storage.index.accounts import AccountStore

    try:
        index = open_index(settings)
        vault = PseudonymVault.open(settings, index)
    except SettingsError as exc:
        print(f"pacs-gateway vault: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if vault is None:
        print("pacs-gateway vault: no de-identification secret is configured", file=sys.stderr)
        return EXIT_FAILED
    accounts = AccountStore(index.engine)
    digest_key = derive(secret, "audit/digest") if (secret := settings.deid_secret()) else None
    try:
        if args.vault_command == "find":
            pseudonyms = vault.patient_pseudonyms(args.patient_id)
            # As the server's trail keeps query values: the patient ID as a keyed digest, never in clear.
            patient = audit_digest(digest_key or accounts.audit_key(), args.patient_id)
            _audit(settings, accounts, digest_key, "vault-find", f"cli vault find {patient}", 200 if pseudonyms else 404)
            for pseudonym in pseudonyms:
                print(pseudonym)
            return EXIT_OK
        original = vault.reveal(args.kind, args.pseudonym)
        _audit(settings, accounts, digest_key, "reidentify", f"cli vault reveal {args.kind} {args.pseudonym}",
               200 if original is not None else 404)  # fmt: skip
    except VaultSealError as exc:
        print(f"pacs-gateway vault: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        index.close()
    if original is None:
        print(f"pacs-gateway vault: no {args.kind} with that pseudonym", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(original, ensure_ascii=False, indent=2))
    return EXIT_OK


def _audit(settings: Settings, accounts: AccountStore, digest_key: bytes | None, action: str, target: str,
           outcome: int) -> None:  # fmt: skip
    """A re-identification on the box is audited as the server's are (the operator is the machine's user)."""
    from gateway import cli_audit

    event = {"username": cli_audit.operator(), "role": "", "action": action, "target": target, "source": "cli",
             "outcome": outcome}  # fmt: skip
    if waiting := cli_audit.record(settings, accounts, digest_key, [event]):
        print(f"{waiting} audit message(s) wait for the audit repository; the gateway sends them", file=sys.stderr)


def run_quarantine(settings: Settings, args: argparse.Namespace) -> int:
    import datetime as dt

    from gateway.ingest.quarantine import Quarantine

    try:
        quarantine = Quarantine(settings.quarantine_path, settings.deid_secret())
    except SettingsError as exc:
        print(f"pacs-gateway quarantine: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.quarantine_command == "list":
        for entry in quarantine.entries():
            when = dt.datetime.fromtimestamp(entry["received_at"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            print(f"{entry['id']}  {when}Z  {entry['calling_ae']:<16}  {entry['rule']}: {entry['reason']}")
        return EXIT_OK
    try:
        data = quarantine.read(args.id)
    except (OSError, ValueError) as exc:
        print(f"pacs-gateway quarantine: cannot read {args.id}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    args.file.write_bytes(data)
    print(f"wrote {args.file} ({len(data)} bytes)")
    return EXIT_OK
