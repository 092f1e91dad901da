"""The real client behind a trusted load balancer: the PROXY protocol (v2 binary, v1 text) and X-Forwarded-For.

Behind HAProxy in TCP mode every connection comes from HAProxy's address. For connections from an address in
``network.trusted_proxies`` only, the DICOM SCP and the MLLP listener read a PROXY protocol header first (HAProxy's
``send-proxy-v2``) and take the client address it gives, for their allow-lists, per-peer limits, audit and logs; a
connection from a trusted proxy without a valid header within ``HEADER_SECONDS`` is closed. From anyone else
nothing is read here: a PROXY header is then just the first bytes of the protocol, and fails as garbage.

Over HTTP, ``X-Forwarded-For`` counts only when the socket's peer is a trusted proxy; the client is the rightmost
hop that is not a trusted proxy (each proxy appends the address it saw, so what lies further left is the
client's word). Specification: https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable

from gateway.peers import PeerAllowList

log = logging.getLogger(__name__)

HEADER_SECONDS = 3.0  # HAProxy sends the header as the connection opens: a short wait is plenty
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_MAX = 107  # the longest v1 line, CRLF included
_V2_MAX_BODY = 2048  # addresses plus the TLVs a balancer may add; anything longer is not a header we take


class ProxyHeaderError(ValueError):
    """The connection does not begin with a valid PROXY protocol header; the text is a reason, never the bytes."""


def trusted_proxies(entries: Iterable[str]) -> PeerAllowList:
    """The allow-list of ``network.trusted_proxies``; empty trusts nobody."""
    return _cached(tuple(entries))


@functools.lru_cache(maxsize=8)
def _cached(entries: tuple[str, ...]) -> PeerAllowList:
    return PeerAllowList(list(entries), when_empty="nobody")


def _normal(address: str) -> str | None:
    """The address as text (IPv4-mapped IPv6 as IPv4), or None when it is not an IP address."""
    try:
        ip = ipaddress.ip_address(address.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


async def read_header(reader: asyncio.StreamReader) -> str | None:
    """Read one PROXY header off the stream: the client's address, or None for a connection the proxy made
    itself (v2 LOCAL, v1 UNKNOWN, or an address family other than IPv4/IPv6), where the peer is the proxy."""
    first = await reader.readexactly(12)
    if first == V2_SIGNATURE:
        return await _read_v2(reader)
    if first.startswith(b"PROXY "):
        return await _read_v1(reader, first)
    raise ProxyHeaderError("no PROXY protocol header")


async def _read_v2(reader: asyncio.StreamReader) -> str | None:
    version_command, family, length = struct.unpack("!BBH", await reader.readexactly(4))
    if version_command >> 4 != 2 or version_command & 0x0F not in (0, 1):
        raise ProxyHeaderError("PROXY v2 header of an unknown version or command")
    if length > _V2_MAX_BODY:
        raise ProxyHeaderError("PROXY v2 header too long")
    body = await reader.readexactly(length)
    if version_command & 0x0F == 0:  # LOCAL: the proxy's own connection (a health check)
        return None
    if family >> 4 == 1 and len(body) >= 12:  # AF_INET: source, destination, ports
        return socket.inet_ntop(socket.AF_INET, body[:4])
    if family >> 4 == 2 and len(body) >= 36:  # AF_INET6
        return _normal(socket.inet_ntop(socket.AF_INET6, body[:16]))
    if family >> 4 in (0, 3):  # AF_UNSPEC, AF_UNIX: no client address to take
        return None
    raise ProxyHeaderError("PROXY v2 header with a malformed address block")


async def _read_v1(reader: asyncio.StreamReader, line: bytes) -> str | None:
    while not line.endswith(b"\r\n"):  # byte by byte: never read past the header into the protocol
        if len(line) >= _V1_MAX:
            raise ProxyHeaderError("PROXY v1 header without its end of line")
        line += await reader.readexactly(1)
    fields = line[:-2].split(b" ")
    if len(fields) >= 2 and fields[1] == b"UNKNOWN":
        return None
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("PROXY v1 header malformed")
    address = _normal(fields[2].decode("ascii", "replace"))
    if address is None or ":" in address and fields[1] == b"TCP4":
        raise ProxyHeaderError("PROXY v1 header with a malformed address")
    return address


async def connection_client(
    reader: asyncio.StreamReader, peer: str, trusted: PeerAllowList, *, protocol: str, refused: object
) -> str | None:
    """The client of a new connection whose socket peer is ``peer``: ``peer`` itself unless it is a trusted proxy,
    else the address its PROXY header gives. None: the connection is to be closed (no valid header in time, or
    it closed first); counted in ``refused`` (a prometheus Counter labelled protocol, reason) and logged, without
    a byte of what was sent."""
    if not trusted.allows(peer):
        return peer
    try:
        async with asyncio.timeout(HEADER_SECONDS):
            client = await read_header(reader)
    except asyncio.IncompleteReadError as end:
        if not end.partial:  # a proxy's health check: connected and closed, nothing to say
            return None
        reason, why = "incomplete", "closed in the middle of its PROXY header"
    except TimeoutError:
        reason, why = "timeout", f"no PROXY header within {HEADER_SECONDS:g} s"
    except ProxyHeaderError as exc:
        reason, why = "malformed", str(exc)
    except OSError:
        return None
    else:
        return peer if client is None else client
    refused.labels(protocol, reason).inc()  # type: ignore[attr-defined]
    log.warning("%s connection from trusted proxy %s closed: %s (network.trusted_proxies)", protocol, peer, why)
    return None


def forwarded_client(remote: str, forwarded_for: Iterable[str], trusted: PeerAllowList) -> str:
    """The HTTP client: ``remote`` (the socket's peer) unless it is a trusted proxy, else the rightmost
    ``X-Forwarded-For`` hop that is not one (the headers' values in the order received)."""
    if not trusted.allows(remote):
        return remote
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    client = remote
    for hop in reversed(hops):
        address = _normal(hop)
        if address is None:  # no proxy of ours writes this: stop at the last hop we can vouch for
            break
        client = address
        if not trusted.allows(address):
            break
    return client
