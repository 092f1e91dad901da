"""CPU and peak memory of a server's whole process tree, from ``/proc`` (Linux).

A server may be several processes: ``pacs-gateway serve`` with ``serve.workers`` above 1
is a supervisor, N worker processes and an HL7 process; ``storescp --fork`` forks a child
per association. ``TreeSample`` reads every descendant of a root pid.

CPU of the tree, read before and after a run: for every live process of the tree, its own
``utime + stime`` plus ``cutime + cstime`` (the CPU of its children that exited and were
waited for, which the kernel adds to the parent's counters when it reaps them, their own
reaped children included). Each process is counted once: while alive by its own counters,
once reaped in its nearest live ancestor's. So a process that starts during the run counts
all it used (absent before), and one that dies during the run counts what it used until it
died (in its parent's ``cutime``), the supervisor reaping its children. A process whose
parent died before reaping it leaves the tree (reparented to init): not counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Proc:
    """One process of a tree, as read at one moment."""

    pid: int
    name: str  # role for a gateway child (``worker-0``, ``hl7``), else the command's name
    cpu_seconds: float  # utime + stime
    children_cpu_seconds: float  # cutime + cstime (reaped children)
    hwm_mib: float  # VmHWM, peak resident set so far
    rss_mib: float  # VmRSS


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()  # fields from 3 (state) on


def _name(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    args = [a.decode(errors="replace") for a in argv if a]
    if "--child" in args[:-1]:
        return args[args.index("--child") + 1]
    if args[1:4] == ["-m", "gateway", "serve"]:
        return "serve"  # the supervisor with serve.workers above 1, else the whole gateway
    return Path(args[0]).name if args else str(pid)


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (a scan of ``/proc``: children of every thread)."""
    parent: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int(_stat(int(entry.name))[1])  # ppid
            except (OSError, IndexError, ValueError):
                continue  # exited while scanned
    tree, frontier = [root], [root]
    while frontier:
        below = [pid for pid, ppid in parent.items() if ppid in frontier]
        tree.extend(below)
        frontier = below
    return tree


def _read(pid: int) -> Proc | None:
    try:
        fields = _stat(pid)
        memory: dict[str, float] = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                memory[key] = int(value.split()[0]) / 1024  # kB
        name = _name(pid)
    except (OSError, IndexError, ValueError):
        return None  # exited while read
    return Proc(pid, name, (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS,
                (int(fields[13]) + int(fields[14])) / _CLOCK_TICKS,
                memory.get("VmHWM", 0.0), memory.get("VmRSS", 0.0))  # a zombie has no memory lines


@dataclass(frozen=True)
class TreeSample:
    """Every process of a tree at one moment."""

    procs: tuple[Proc, ...]

    @classmethod
    def read(cls, root: int) -> TreeSample:
        return cls(tuple(p for p in map(_read, descendants(root)) if p is not None))

    @property
    def cpu_seconds(self) -> float:
        """CPU used by the tree so far: each live process's own, plus what its reaped children used."""
        return sum(p.cpu_seconds + p.children_cpu_seconds for p in self.procs)

    @property
    def rss_mib(self) -> float:
        """Resident set of the tree's processes added up (shared pages counted in each)."""
        return sum(p.rss_mib for p in self.procs)

    @property
    def peak_per_process_mib(self) -> float:
        """The largest VmHWM (peak resident set) of any one process of the tree."""
        return max((p.hwm_mib for p in self.procs), default=0.0)

    def peaks(self) -> dict[str, float]:
        """VmHWM per process name (the largest when several share one)."""
        found: dict[str, float] = {}
        for p in self.procs:
            found[p.name] = max(found.get(p.name, 0.0), p.hwm_mib)
        return dict(sorted(found.items()))

    def cpu_by_name(self, before: TreeSample) -> dict[str, float]:
        """CPU seconds per process name between ``before`` and this sample (reaped children in their parent's)."""
        then = {p.pid: p.cpu_seconds + p.children_cpu_seconds for p in before.procs}
        found: dict[str, float] = {}
        for p in self.procs:
            used = p.cpu_seconds + p.children_cpu_seconds - then.get(p.pid, 0.0)
            found[p.name] = found.get(p.name, 0.0) + used
        return dict(sorted(found.items()))
