"""EMR link benchmark, in parts; each part starts what it needs on this machine, on free ports.

Part ``hl7``: a gateway (product defaults: SQLite index, or with ``--index
postgresql`` a private PostgreSQL cluster with its default durability,
fsync and synchronous commit on, or ``--index-url`` a database given; local
object store) receives 1,000
ADT (A01 for 500 new patients, then A08 for each of them) and 1,000 ORM^O01
new orders (two per patient), interleaved, over ONE MLLP connection with
python-hl7's asyncio client, twice: once sending each message after the
previous ACK (as most interface engines do), once keeping up to ``--window``
messages awaiting their ACK. Every ACK must be AA and answer its own message,
in order. Reported: messages per second and the ACK latency (from the message
written to its ACK read) at the 50th and 99th percentiles. Targets (product
issue): over 500 messages/s, p99 under 20 ms. With ``--tls`` the same runs go
to a second gateway whose HL7 port speaks MLLP over TLS with a required client
certificate (trial CA, TLS 1.3), in the same invocation, and the TLS/plain
ratios of the rates are printed.

Another part (FHIR ImagingStudy publication lag) can be added as a function
``part_<name>(args, work) -> list[str]`` in ``PARTS``.

Run from the repository root:  ``.venv/bin/python bench/emr.py [--part hl7] [--messages 2000]``
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/emr.py``: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hl7.mllp import open_hl7_connection  # noqa: E402

from bench.common import machine  # noqa: E402
from gateway.tls_certs import write_trial_set  # noqa: E402
from tests.peers.postgres import run_postgres  # noqa: E402
from tests.gateway.emr.hl7.messages import Order, Person, adt, orm  # noqa: E402
from tests.gateway_process import GatewayProcess  # noqa: E402

TARGET_RATE = 500.0  # messages per second
TARGET_P99_MS = 20.0


def hl7_messages(count: int, prefix: str = "B") -> list[str]:
    """``count`` messages, half ADT and half ORM^O01: A01 for new patients, then A08 for each, orders between."""
    patients = max(1, count // 4)
    people = [
        Person(mrn=f"{prefix}-MRN-{i:05d}", family="Nguyễn", given=f"Văn {i}", citizen=f"0792{i:08d}", insurance=f"DN47{i:011d}")
        for i in range(patients)
    ]
    renamed = [Person(**{**p.__dict__, "given": p.given + " Đức"}) for p in people]
    adts = [adt("A01", p) for p in people] + [adt("A08", p) for p in renamed]
    # An order carries the patient as the EMR knows it then: renamed once its A08 has gone.
    orders = [
        orm("NW", (people if i < patients else renamed)[i % patients],
            Order(f"{prefix}-PL-{i:05d}", f"{prefix}{i:07d}", when="202612011030", station="CT01"))
        for i in range(count - len(adts))
    ]  # fmt: skip
    out = []
    for i in range(max(len(adts), len(orders))):
        out += ([adts[i]] if i < len(adts) else []) + ([orders[i]] if i < len(orders) else [])
    return out


async def send_in_turn(port: int, messages: list[str], tls: ssl.SSLContext | None = None) -> list[float]:
    """Send each message after the previous ACK, on one connection; each ACK's latency in seconds."""
    return await send_pipelined(port, messages, window=1, tls=tls)


async def send_pipelined(port: int, messages: list[str], window: int, tls: ssl.SSLContext | None = None) -> list[float]:
    """Send on one connection with up to ``window`` messages awaiting their ACK (1: each after the previous
    ACK, as most interface engines do); each ACK's latency in seconds, from its message written to it read.
    Every ACK must be AA and answer its own message, in order."""
    secure = {"ssl": tls, "server_hostname": "localhost"} if tls is not None else {}
    reader, writer = await open_hl7_connection("127.0.0.1", port, encoding="utf-8", **secure)
    room = asyncio.Semaphore(window)
    sent: list[float] = []

    async def send() -> None:
        for text in messages:
            await room.acquire()
            sent.append(time.perf_counter())
            writer.writeblock(text.encode("utf-8"))
            await writer.drain()

    sending = asyncio.create_task(send())
    latencies = []
    try:
        for text in messages:
            ack = await reader.readblock()
            latencies.append(time.perf_counter() - sent[len(latencies)])
            room.release()
            control = text.split("\r", 1)[0].split("|")[9]
            if f"MSA|AA|{control}".encode() not in ack:
                raise SystemExit(f"not accepted, or not this message's ACK: {ack[:300]!r}")
        await sending
    finally:
        sending.cancel()
        writer.close()
    return latencies


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def part_hl7(args: argparse.Namespace, work: Path) -> list[str]:
    if args.index_url:
        return _hl7_runs(args, work, lambda name: {"PACSGW_INDEX_URL": args.index_url})
    if args.index == "postgresql":
        with run_postgres(work / "postgres", durable=True) as server:
            return _hl7_runs(args, work, lambda name: {"PACSGW_INDEX_URL": server.create_database(f"bench_emr_{name}")})
    return _hl7_runs(args, work, lambda name: {})


def _hl7_runs(args: argparse.Namespace, work: Path, env: Callable[[str], dict[str, str]]) -> list[str]:
    """The plain gateway, then with ``--tls`` one on MLLP over TLS (mutual), and the ratios of their rates."""
    lines, plain = _hl7(args, work / "plain", env("plain"), None)
    if not args.tls:
        return lines
    ca, server = write_trial_set(work / "pki", ["localhost", "127.0.0.1"])
    sender = ca.issue(work / "pki", "emr", "EMR-BENCH", client=True)
    tls_env = {
        "PACSGW_HL7_TLS_CERT_FILE": str(server.cert_file), "PACSGW_HL7_TLS_KEY_FILE": str(server.key_file),
        "PACSGW_HL7_TLS_CLIENT_CA_FILE": str(ca.cert_file), "PACSGW_HL7_TLS_REQUIRE_CLIENT_CERT": "true",
    }  # fmt: skip
    context = ssl.create_default_context(cafile=ca.cert_file)
    context.load_cert_chain(sender.cert_file, sender.key_file)
    more, secure = _hl7(args, work / "tls", {**env("tls"), **tls_env}, context)
    lines += ["", *more, ""]
    for (window, rate), (_, tls_rate) in zip(plain, secure):
        how = "waiting for each ACK" if window == 1 else f"{window} in flight"
        lines.append(f"  MLLP over TLS / plain, {how}: {tls_rate / rate:.2f}x of the plain rate")
    return lines


def _hl7(args: argparse.Namespace, work: Path, env: dict[str, str], tls: ssl.SSLContext | None) -> tuple[list[str], list[tuple[int, float]]]:
    gateway = GatewayProcess(work / "gw-hl7", env, product_defaults=True)
    gateway.start()
    index = "given" if args.index_url else args.index
    transport = "MLLP over TLS (TLS 1.3, client certificate required)" if tls else "MLLP"
    lines = [f"HL7 v2 over one {transport} connection, {index} index: {args.messages} messages (ADT^A01/A08 and ORM^O01) per run"]
    rates = []
    try:
        asyncio.run(send_in_turn(gateway.hl7_port, hl7_messages(100, prefix="W"), tls))  # warm-up, not counted
        for window, prefix in ((1, "B"), (args.window, "P")):
            messages = hl7_messages(args.messages, prefix=prefix)
            started = time.perf_counter()
            latencies = asyncio.run(send_pipelined(gateway.hl7_port, messages, window, tls))
            seconds = time.perf_counter() - started
            lines += _hl7_result(window, len(messages) / seconds, latencies)
            rates.append((window, len(messages) / seconds))
    finally:
        gateway.kill()
    return lines, rates


def _hl7_result(window: int, rate: float, latencies: list[float]) -> list[str]:
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    how = "sender waits for each ACK" if window == 1 else f"sender keeps up to {window} messages awaiting their ACK"
    return [
        f"  {how}: {rate:.0f} messages/s (target > {TARGET_RATE:.0f}): {'PASS' if rate > TARGET_RATE else 'MISS'};"
        f" ACK latency p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(latencies) * 1000:.2f} ms"
        f" (target p99 < {TARGET_P99_MS:.0f} ms): {'PASS' if p99 < TARGET_P99_MS else 'MISS'}",
    ]


PARTS: dict[str, Callable[[argparse.Namespace, Path], list[str]]] = {"hl7": part_hl7}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/emr.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=sorted(PARTS), action="append", help="a part to run (default: all)")
    parser.add_argument("--messages", type=int, default=2000, help="HL7 messages in the hl7 part (half ADT, half ORM)")
    parser.add_argument("--window", type=int, default=6, help="messages in flight in the hl7 part's second run")
    parser.add_argument("--index", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the gateway's index database (postgresql: a private cluster started here)")
    parser.add_argument("--tls", action="store_true",
                        help="hl7 part: also a gateway on MLLP over TLS (mutual), in the same run; the TLS/plain ratios")
    parser.add_argument("--index-url", metavar="URL",
                        help="use this (empty) index database instead, e.g. postgresql+psycopg://user@host/db")
    args = parser.parse_args(argv)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.part or sorted(PARTS):
            lines += PARTS[name](args, Path(tmp))
    m = machine()
    print(f"\nEMR link benchmark, {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")
    print(f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['memory_gib']} GiB RAM, load {m['load_average']}\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
