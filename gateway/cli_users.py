"""Command line for accounts: ``pacs-gateway user add | token | revoke | password | unlock | reset-totp | link | grant``."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys
from collections.abc import Callable

from gateway.settings import Settings, SettingsError
from storage.index.accounts import ACCOUNT_ROLES, AccountError, AccountStore, Role

EXIT_OK, EXIT_FAILED = 0, 1
DEFAULT_TOKEN_DAYS = 90  # a token forgotten in a script or a leaver's notes stops working by itself


def add_commands(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    user = sub.add_parser("user", help="accounts of the HTTP API: users, tokens, referring physicians' patients")
    common(user)
    actions = user.add_subparsers(dest="user_command", required=True)
    add = actions.add_parser("add", help="create a user (asks for a password unless --no-password)")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=[r.value for r in ACCOUNT_ROLES])
    add.add_argument("--display-name", default="")
    add.add_argument("--no-password", action="store_true", help="token-only account (a service, a script)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    token = actions.add_parser("token", help="issue a bearer token for a user and print it")
    token.add_argument("username")
    token.add_argument("--hours", type=float, default=None, help=f"lifetime in hours (default: {DEFAULT_TOKEN_DAYS} days)")
    token.add_argument("--no-expiry", action="store_true", help="valid until revoked (`user revoke`), never expiring")
    token.add_argument("--label", default="cli")
    revoke = actions.add_parser("revoke", help="revoke every token of a user")
    revoke.add_argument("username")
    password = actions.add_parser("password", help="set a user's password (asks for it, or --password-stdin)")
    password.add_argument("username")
    password.add_argument("--password-stdin", action="store_true")
    unlock = actions.add_parser("unlock", help="lift every login lockout of a user name, from any address")
    unlock.add_argument("username")
    reset = actions.add_parser("reset-totp", help="forget a user's second factor (a lost phone): their next login enrols afresh")
    reset.add_argument("username")
    link = actions.add_parser("link", help="let a referring physician see a patient's studies")
    link.add_argument("username")
    link.add_argument("patient_id")
    link.add_argument("--issuer", help="the patient's Issuer of Patient ID (default: the one the index holds the ID under)")
    grant = actions.add_parser("grant", help="let a referring physician see one study")
    grant.add_argument("username")
    grant.add_argument("study_uid")
    digest = actions.add_parser("audit-digest", help="the digest under which the audit trail records an identifying value")
    digest.add_argument("value")
    for action in (add, token, revoke, password, unlock, reset, link, grant, digest):
        common(action)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise AccountError("the passwords differ")
    return first


def _reset_totp(settings: Settings, accounts: AccountStore, username: str) -> None:
    """Forget the user's TOTP secret and recovery codes, recorded in the audit trail as the gateway records."""
    from dicom_rules.pseudonyms import derive
    from gateway import cli_audit
    from gateway.totp import SecondFactor

    user = accounts.user(username)
    if user is None:
        raise AccountError(f"no user {username!r}")
    secret = settings.deid_secret()
    had = SecondFactor(accounts.engine, secret=secret, issuer=settings.login.totp_issuer).reset(user)
    event = {"username": user.username, "role": user.role.value, "action": "totp-reset", "source": "cli",
             "target": f"cli reset-totp by {cli_audit.operator()}", "outcome": 200 if had else 404}  # fmt: skip
    waiting = cli_audit.record(settings, accounts, derive(secret, "audit/digest") if secret else None, [event])
    if waiting:
        print(f"{waiting} audit message(s) wait for the audit repository; the gateway sends them", file=sys.stderr)
    print(f"{username}: second factor reset; the next login that needs one enrols afresh" if had
          else f"{username}: had no second factor; nothing to reset")  # fmt: skip


def run(settings: Settings, args: argparse.Namespace) -> int:
    from dicom_rules.pseudonyms import derive
    from gateway.audit import audit_digest
    from gateway.service import open_index
    from storage.index.times import utc_now

    try:
        secret = settings.deid_secret() if args.user_command == "audit-digest" else None
    except SettingsError as exc:  # an unreadable, unprotected or short secret: said, not a traceback
        print(f"pacs-gateway user: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if secret:
        print(audit_digest(derive(secret, "audit/digest"), args.value))
        return EXIT_OK

    index = open_index(settings)
    accounts = AccountStore(index.engine)
    try:
        command = args.user_command
        if command == "audit-digest":  # no secret: the key kept in the index, as the gateway's audit writer uses
            print(audit_digest(accounts.audit_key(), args.value))
        elif command == "add":
            chosen = "" if args.no_password else _password(args.password_stdin)
            user = accounts.add_user(args.username, Role(args.role), password=chosen, display_name=args.display_name)
            print(f"user {user.username} ({user.role.value}) created")
        elif command == "token":
            holder = accounts.user(args.username)
            if holder is None:
                raise AccountError(f"no user {args.username!r}")
            if args.no_expiry and args.hours is not None:
                raise AccountError(f"--hours and --no-expiry: give one, or neither ({DEFAULT_TOKEN_DAYS} days)")
            hours = None if args.no_expiry else args.hours if args.hours is not None else DEFAULT_TOKEN_DAYS * 24.0
            print(accounts.issue_token(holder, hours=hours, label=args.label))
            until = "revoked" if hours is None else f"{utc_now() + dt.timedelta(hours=hours):%Y-%m-%d %H:%M} UTC, or revoked"
            print(f"valid until {until}", file=sys.stderr)
        elif command == "revoke":
            print(f"{accounts.revoke_tokens(args.username)} token(s) revoked")
        elif command == "password":
            revoked = accounts.set_password(args.username, _password(args.password_stdin))
            print(f"password of {args.username} set; {revoked} token(s) revoked")
        elif command == "unlock":
            from storage.index.login_throttle import LoginThrottle

            if accounts.user(args.username) is None:
                raise AccountError(f"no user {args.username!r}")
            held = LoginThrottle(index.engine).unlock(args.username)
            print(f"{args.username}: logins unlocked ({held} count(s) cleared)")
        elif command == "reset-totp":
            _reset_totp(settings, accounts, args.username)
        elif command == "link":
            linked = accounts.link_patient(args.username, args.patient_id, args.issuer)
            if linked.issuer is None:
                print(f"{args.username} linked to patient ID {linked.patient_id}, not in the index yet: the link opens it "
                      "while the index holds that ID under one issuer only; name the issuer with --issuer to be sure")  # fmt: skip
            else:
                print(f"{args.username} linked to patient ID {linked.patient_id}, issuer {linked.issuer or '(none)'}")
        elif command == "grant":
            accounts.grant_study(args.username, args.study_uid)
    except AccountError as exc:
        print(f"pacs-gateway user: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        index.close()
    return EXIT_OK
