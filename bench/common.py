"""What both benchmarks report about the machine they ran on."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^(?:model name|Hardware|cpu model)\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    meminfo = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model.group(1).strip() if model else "unknown",
        "memory_gib": round(int(meminfo.group(1)) / 1024**2, 1) if meminfo else None,
        "load_average": os.getloadavg(),
    }
