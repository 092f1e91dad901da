"""Certificates and peers for the DICOM TLS tests: DCMTK's +tls options, and a raw TLS client that can put a PROXY
header and its ClientHello in one segment, as a proxy may."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path


from gateway.tls_certs import IssuedCertificate, TrialCa
from tests.peers.orthanc import DCMTK_ENV, dcmtk_binary


@dataclass
class Pki:
    """A trial CA with the gateway's server certificate, clients' certificates, and one from another CA."""

    ca: TrialCa
    server: IssuedCertificate
    ct01: IssuedCertificate  # CN CT01
    mr01: IssuedCertificate  # CN mr01.hospital.lan, the same as DNS subjectAltName
    stranger: IssuedCertificate  # CN CT01, issued by a CA the gateway does not trust

    @classmethod
    def create(cls, directory: Path) -> Pki:
        ca = TrialCa.create(directory)
        other = TrialCa.create(directory / "other", name="Another CA")
        return cls(
            ca,
            ca.issue(directory, "server", "localhost", hosts=["localhost", "127.0.0.1"]),
            ca.issue(directory, "ct01", "CT01", client=True),
            ca.issue(directory, "mr01", "mr01.hospital.lan", hosts=["mr01.hospital.lan"], client=True),
            other.issue(directory / "other", "stranger", "CT01", client=True),
        )


def both_ways_certificate(ca: TrialCa, directory: Path, stem: str, host: str) -> IssuedCertificate:
    """A certificate for server and client use at once (Orthanc shows one certificate either way)."""
    return ca.issue(directory, stem, host, hosts=[host], client=True, server_too=True)


def tls_options(pki: Pki, client: IssuedCertificate | None) -> list[str]:
    """DCMTK's options for TLS with ``client``'s certificate (None: anonymous), checking the gateway's against the CA."""
    shown = ["+tls", str(client.key_file), str(client.cert_file)] if client else ["+tla"]
    return [*shown, "+cf", str(pki.ca.cert_file)]


def dcmtk(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk_binary(tool), *args], env={**os.environ, **DCMTK_ENV}, capture_output=True, text=True, timeout=120
    )


class TlsPipe:
    """A TLS client over a socket it drives itself (memory BIOs), so that what precedes the ClientHello (a PROXY
    header) goes in the same segment as the ClientHello."""

    def __init__(self, port: int, context: ssl.SSLContext, *, before: bytes = b"", source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        self.sock.sendall(before + self.outgoing.read())  # one write: the header and the ClientHello
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
        self._flush()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        self.incoming.write(chunk)

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def _exactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            try:
                out += self.tls.read(n - len(out))
            except ssl.SSLWantReadError:
                self._fill()
        return bytes(out)

    def receive(self) -> tuple[int, bytes]:
        pdu_type, length = struct.unpack(">BxI", self._exactly(6))
        return pdu_type, self._exactly(length)

    def close(self) -> None:
        self.sock.close()
