"""``pacs-gateway tls self-signed DIR``: a CA and a server certificate for a trial of HTTPS (and the other TLS ports).

For a trial or a test bench only: the hospital's CA issues the certificates a
gateway runs with. The CA's key is not kept, so the CA vouches for this one
server certificate and nothing else.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1
_FILES = ("ca.pem", "server.pem", "server.key")


def add_commands(sub: argparse._SubParsersAction) -> None:
    tls = sub.add_parser("tls", help="trial certificates")
    actions = tls.add_subparsers(dest="tls_command", required=True)
    made = actions.add_parser(
        "self-signed", help="write a trial CA (ca.pem) and a server certificate it signs (server.pem, server.key)"
    )
    made.add_argument("directory", type=Path, metavar="DIR", help="where to write them (made if missing)")
    made.add_argument(
        "--host", action="append", default=[], metavar="NAME",
        help="a DNS name or IP address clients reach the gateway at (repeat it; default: localhost, 127.0.0.1, ::1 "
        "and this machine's name)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from gateway.tls_certs import write_trial_set

    directory: Path = args.directory
    taken = [name for name in (*_FILES, "ca.key") if (directory / name).exists()]
    if taken:
        print(f"pacs-gateway tls self-signed: {directory / taken[0]} exists; not overwritten (choose another DIR)", file=sys.stderr)
        return EXIT_FAILED
    hosts = list(dict.fromkeys(args.host)) or ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _ca, server = write_trial_set(directory, hosts)
        (directory / "ca.key").unlink()  # it has signed the one certificate it is for
    except (OSError, ValueError) as exc:
        print(f"pacs-gateway tls self-signed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    ca = directory / "ca.pem"
    print(f"CA certificate:     {ca} (give it to clients; its key is not kept)")
    print(f"server certificate: {server.cert_file} for {', '.join(hosts)} (valid 365 days)")
    print(f"server key:         {server.key_file} (owner only)")
    print("For a trial only. Use them with, in the settings file:")
    print(f'  [http]\n  tls_cert_file = "{server.cert_file.resolve()}"\n  tls_key_file = "{server.key_file.resolve()}"')
    print(f"and trust the CA in clients, e.g. curl --cacert {ca} https://{hosts[0]}:8042/health")
    return EXIT_OK
