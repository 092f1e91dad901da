"""A site of several gateway nodes behind HAProxy, as the cluster journey and bench/cluster.py run it.

Every node is a ``python -m gateway serve`` process (GatewayProcess) with its own
data dir and spool; all share one PostgreSQL database and one S3 bucket, and
the balancer's address is their public URL (what an operator sets behind a
load balancer). Nodes start one after the other: the first creates the schema.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE

from tests.gateway_process import GatewayProcess
from tests.peers.haproxy import HAProxy, Node, run_haproxy


# Every node serves DICOM and HTTP; HL7 MLLP may be served by one node per site at a time.
NODE_BACKENDS = ("dicom", "http")


@dataclass
class Site:
    """The nodes, the balancer in front of them and what they share."""

    nodes: list[GatewayProcess]
    lb: HAProxy
    env: dict[str, str]

    @property
    def token(self) -> str:
        assert self.nodes[0].token
        return self.nodes[0].token

    def names(self) -> list[str]:
        return [node_name(i) for i in range(len(self.nodes))]

    def call(self, method: str, path: str, body: Any = None, *, timeout: float = 10.0) -> tuple[int, Any]:
        """An administrator's HTTP request through the balancer; JSON bodies both ways."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", **({"Content-Type": "application/json"} if data else {})}
        request = urllib.request.Request(self.lb.base_url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw, status, ctype = response.read(), response.status, response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            raw, status, ctype = err.read(), err.code, err.headers.get("Content-Type", "")
        return status, (json.loads(raw) if raw and "json" in ctype else raw.decode(errors="replace"))

    def restart(self, index: int) -> None:
        """Start a killed node again on its data dir (its spool is filed) and wait until the balancer has it back."""
        self.nodes[index].start()
        self.lb.wait_state({node_name(index)}, "UP", backends=NODE_BACKENDS)

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Every running node's spool empty: every acknowledged instance stored and indexed."""
        for node in self.nodes:
            if node.proc is not None:
                node.wait_idle(timeout)


def node_name(index: int) -> str:
    return f"node{index + 1}"


def node_pids(node: GatewayProcess) -> list[int]:
    """The node's processes: the one started and its descendants (a supervisor's workers)."""
    if node.proc is None:
        return []
    pids, frontier = [], [node.proc.pid]
    while frontier:
        pid = frontier.pop()
        pids.append(pid)
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        frontier.extend(int(child) for child in children)
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (fields 14 and 15 of /proc/<pid>/stat), with their reaped children's."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / ticks


@contextmanager
def run_site(workdir: Path, count: int, env: dict[str, str], *, product_defaults: bool = False) -> Iterator[Site]:
    """Start HAProxy and ``count`` nodes with ``env`` (shared index, bucket...); kill them all on exit."""
    nodes = [GatewayProcess(workdir / node_name(i), {}, product_defaults=product_defaults) for i in range(count)]
    members = [Node(node_name(i), n.dicom_port, n.http_port, n.hl7_port) for i, n in enumerate(nodes)]
    # As deploy/haproxy.cfg: a PROXY v2 header on DICOM and MLLP, which the nodes read from the balancer only.
    with run_haproxy(workdir / "haproxy", members, send_proxy=True) as lb:
        # HAProxy balances plain HTTP here, so the nodes serve it as told (http.plain), trusting its X-Forwarded-*.
        shared = {
            "PACSGW_HTTP_PUBLIC_URL": lb.base_url, "PACSGW_NETWORK_TRUSTED_PROXIES": "127.0.0.1",
            "PACSGW_HTTP_PLAIN": "true", **env,
        }  # fmt: skip
        try:
            for i, node in enumerate(nodes):
                # Names take effect once the gateway reads [cluster] node_name; one receiver per node on 2 cores.
                node.env.update({**shared, "PACSGW_CLUSTER_NODE_NAME": node_name(i), "PACSGW_SERVE_WORKERS": "1"})
                node.start()
            lb.wait_state([m.name for m in members], "UP", backends=NODE_BACKENDS)
            lb.wait_any_up("mllp")
            yield Site(nodes, lb, shared)
        finally:
            for node in nodes:
                node.kill()


def wait_for(what: str, probe: Any, timeout: float = 60.0, interval: float = 0.2) -> Any:
    """Poll ``probe`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


class Sender:
    """Modalities sending through the balancer, one association per chunk at once.

    An association that is aborted (its node killed) is opened again, through the
    balancer, and every instance not yet answered Success is sent again, as a
    modality does; a failure status is retried too. ``acked`` holds the SOP
    Instance UIDs answered Success."""

    def __init__(self, port: int, called_ae: str, *, calling_ae: str = "MODALITY", max_tries: int = 30) -> None:
        self.port, self.called_ae, self.calling_ae, self.max_tries = port, called_ae, calling_ae, max_tries
        self.acked: set[str] = set()
        self.statuses: list[tuple[str, int]] = []  # (SOP Instance UID, status) of every non-Success answer
        self.aborts = 0
        self._lock = threading.Lock()

    def send_all(self, chunks: list[list[Dataset]]) -> list[threading.Thread]:
        """Start one thread per chunk; the caller joins them."""
        threads = [threading.Thread(target=self._send_chunk, args=(chunk,), daemon=True) for chunk in chunks]
        for thread in threads:
            thread.start()
        return threads

    def _send_chunk(self, chunk: list[Dataset]) -> None:
        ae = AE(ae_title=self.calling_ae)
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        pending, tries = list(chunk), 0
        while pending and tries < self.max_tries:
            tries += 1
            assoc = ae.associate("127.0.0.1", self.port, ae_title=self.called_ae)
            if not assoc.is_established:
                continue
            left: list[Dataset] = []
            for i, ds in enumerate(pending):
                if not assoc.is_established:
                    left.extend(pending[i:])
                    break
                reply = assoc.send_c_store(ds)
                status = int(getattr(reply, "Status", -1))
                with self._lock:
                    if status == 0:
                        self.acked.add(ds.SOPInstanceUID)
                    else:
                        self.statuses.append((ds.SOPInstanceUID, status))
                if status != 0:
                    left.append(ds)
            if assoc.is_established:
                assoc.release()
            else:
                with self._lock:
                    self.aborts += 1
            pending = left


