"""A private, throw-away PostgreSQL cluster on an ephemeral port for tests."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from .ports import free_port

_HOST = "127.0.0.1"
_OS_USER = "postgres"  # PostgreSQL refuses to run as root
_SETTINGS = {
    "listen_addresses": f"'{_HOST}'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
}

DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


def pg_bin_dir() -> Path:
    """Newest ``/usr/lib/postgresql/<ver>/bin`` (Debian layout), else the dir of ``pg_ctl`` on PATH."""
    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    candidates.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1)
    if candidates:
        return candidates[-1]
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb/pg_ctl) found")
    return Path(pg_ctl).parent


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    password: str

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL for ``dbname`` using the psycopg (v3) driver."""
        return (
            f"postgresql+psycopg://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{dbname}"
        )

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host=self.host, port=self.port, user=self.user, password=self.password,
            dbname=dbname, autocommit=True,
        )

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its SQLAlchemy URL."""
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)


class _Cluster:
    """Runs the server binaries, as the ``postgres`` OS user when we are root."""

    def __init__(self, root: Path) -> None:
        self.bin = pg_bin_dir()
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sock"
        self.log = root / "postgres.log"
        self.as_root = os.geteuid() == 0

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", _OS_USER, "--", *cmd]
        return subprocess.run(
            cmd, cwd=self.root, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            env={**os.environ, "LC_ALL": "C.UTF-8", "TZ": "UTC"},
        )

    def check(self, *args: str) -> None:
        result = self.run(*args)
        if result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
                f"\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def init(self, user: str, password: str, overrides: dict[str, str] | None = None) -> None:
        self.sockets.mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(password + "\n")
        if self.as_root:
            entry = pwd.getpwnam(_OS_USER)
            for path in (self.root, self.sockets, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        try:
            self.check(
                "initdb", "-D", str(self.data), "-U", user, f"--pwfile={pwfile}",
                "--auth-local=trust", "--auth-host=scram-sha-256",
                "--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions",
            )
        finally:
            pwfile.unlink()
        # Only TCP on 127.0.0.1 and the private socket dir: never the system cluster.
        settings = {**_SETTINGS, **(overrides or {}), "unix_socket_directories": f"'{self.sockets}'"}
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("".join(f"{key} = {value}\n" for key, value in settings.items()))

    def start(self, port: int) -> None:
        self.check(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-o", f"-p {port}",
        )

    def stop(self) -> None:
        self.run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30")


def _cluster_root(workdir: Path) -> tuple[Path, bool]:
    """Directory for the cluster; ``True`` if it is a temp dir we must delete ourselves.

    As root the ``postgres`` user must be able to reach it (pytest's tmp dirs are 0700)
    and the socket path must fit in sun_path, otherwise use a fresh dir under $TMPDIR.
    """
    root = workdir / "pg"
    socket_len = len(str(root / "sock" / ".s.PGSQL.65535"))
    reachable = os.geteuid() != 0 or subprocess.run(
        ["runuser", "-u", _OS_USER, "--", "test", "-x", str(workdir)], capture_output=True
    ).returncode == 0
    if reachable and socket_len < 100:
        root.mkdir(parents=True)
        return root, False
    return Path(tempfile.mkdtemp(prefix="pg-test-")), True


@contextmanager
def run_postgres(workdir: Path, *, durable: bool = False) -> Iterator[PostgresServer]:
    """Start a private PostgreSQL cluster (fsync off) on 127.0.0.1:<ephemeral>; remove on exit.

    ``durable``: with PostgreSQL's own defaults instead (fsync, synchronous commit, full page
    writes), for benchmarks that compare commit costs with a durable SQLite."""
    workdir.mkdir(parents=True, exist_ok=True)
    root, temporary = _cluster_root(workdir)
    cluster = _Cluster(root)
    user, password = "gateway", secrets.token_urlsafe(16)
    started = False
    try:
        cluster.init(user, password, DURABLE if durable else None)
        for attempt in range(3):  # the port may be taken between probing and binding
            port = free_port()
            try:
                cluster.start(port)
                started = True
                break
            except RuntimeError:
                cluster.stop()
                if attempt == 2:
                    raise
        yield PostgresServer(host=_HOST, port=port, user=user, password=password)
    finally:
        if started or (cluster.data / "postmaster.pid").exists():
            cluster.stop()
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
