"""Which network peers may connect to a listener: the DICOM SCP (``dicom.allowed_peers``), HL7 (``hl7.allowed_peers``)."""

from __future__ import annotations

import ipaddress
from typing import Literal


class PeerAllowList:
    """The networks a listener hears; when none are listed, anyone (``when_empty="anyone"``), this host only
    (``"loopback"``) or nobody (``"nobody"``: ``network.trusted_proxies``).

    A dual-stack socket's IPv4 peer (``::ffff:a.b.c.d``) is that IPv4 address, and an IPv6 zone (``%eth0``)
    is not part of the address. Loopback is 127.0.0.0/8 and ::1, where no other host's connection can come from.
    """

    def __init__(self, entries: list[str], *, when_empty: Literal["anyone", "loopback", "nobody"]) -> None:
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in entries]
        self.when_empty = when_empty

    def allows(self, address: str) -> bool:
        if not self.networks and self.when_empty == "anyone":
            return True
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not self.networks:
            return self.when_empty == "loopback" and ip.is_loopback
        return any(ip in network for network in self.networks)

    def describe(self) -> str:
        if not self.networks:
            return {"anyone": "any peer", "loopback": "loopback peers only"}.get(self.when_empty, "no peer")
        return "peers in " + ", ".join(str(n) for n in self.networks)
