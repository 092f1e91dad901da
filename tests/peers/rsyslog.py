"""Debian's rsyslog with rsyslog-gnutls as an audit record repository: RFC 5425 (syslog over TLS, octet counting).

Run as an unprivileged process on a free port with a configuration of its own
(imtcp with the gtls stream driver in TLS-only mode, a server certificate of
the trial CA; with ``client_certificates`` it also asks the client for one of
that CA), it writes each message it receives on a line of ``received``
(the message as sent, without its octet count). ``stop`` (SIGTERM, a graceful
stop: rsyslog closes its connections and writes out what it has) and ``kill``
(SIGKILL) end it; ``start`` again on the same port and file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from gateway.tls_certs import TrialCa
from tests.peers.ports import free_port, wait_for_port
from tests.peers.process import log_tail

RSYSLOGD = "/usr/sbin/rsyslogd"

_CONFIG = """\
global(
  workDirectory="{work}"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}"
  maxMessageSize="256k"
)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="{auth_mode}"
       maxSessions="200")
input(type="imtcp" address="127.0.0.1" port="{port}" supportOctetCountedFraming="on")
template(name="asSent" type="string" string="%rawmsg%\\n")
*.* action(type="omfile" file="{received}" template="asSent" flushOnTXEnd="on" asyncWriting="off")
"""


@dataclass
class Rsyslog:
    """One rsyslogd collector taking TLS syslog on ``port`` and writing what it receives to ``received``."""

    directory: Path
    ca: TrialCa
    port: int = field(default_factory=free_port)
    client_certificates: bool = False  # True: a client must show a certificate of the CA (authMode x509/certvalid)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def received(self) -> Path:
        return self.directory / "received.log"

    @property
    def log_path(self) -> Path:
        return self.directory / "rsyslogd.log"

    def _write_config(self) -> Path:
        server = self.ca.issue(self.directory, "rsyslog", "localhost", hosts=["localhost", "127.0.0.1"])
        work = self.directory / "work"
        work.mkdir(parents=True, exist_ok=True)
        config = self.directory / "rsyslog.conf"
        config.write_text(
            _CONFIG.format(
                work=work, ca=self.ca.cert_file, cert=server.cert_file, key=server.key_file, port=self.port,
                received=self.received, auth_mode="x509/certvalid" if self.client_certificates else "anon",
            )  # fmt: skip
        )
        return config

    def start(self, timeout: float = 20.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(config), "-i", str(self.directory / "rsyslogd.pid")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        try:
            wait_for_port("127.0.0.1", self.port, timeout)
        except TimeoutError:
            self.kill()
            raise RuntimeError(f"rsyslogd did not listen on {self.port}\n{log_tail(self.log_path)}") from None
        if self.proc.poll() is not None:
            raise RuntimeError(f"rsyslogd exited with {self.proc.returncode}\n{log_tail(self.log_path)}")

    def _signal(self, signum: int, timeout: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signum)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        (self.directory / "rsyslogd.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        """SIGTERM: rsyslog's own graceful stop."""
        self._signal(signal.SIGTERM, 15)

    def kill(self) -> None:
        self._signal(signal.SIGKILL, 5)

    def messages(self) -> list[str]:
        try:
            text = self.received.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.split("\n") if line]

    def wait_for(self, count: int, timeout: float) -> list[str]:
        """Poll until ``count`` messages have arrived (or time is up); the messages received so far."""
        deadline = time.monotonic() + timeout
        got = self.messages()
        while len(got) < count and time.monotonic() < deadline:
            time.sleep(0.1)
            got = self.messages()
        return got
