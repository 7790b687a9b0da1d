"""CPU time the gateway spends per request, read from /proc: a steadier ratio than req/s.

On a shared 2-core machine throughput moves with whatever else runs; the CPU a gateway burns
per request moves much less, so on/off comparisons (policies, audit log, cache) are read from
it as well. The gateway's processes are found by the port they listen on (with several
uvicorn workers, each inherits the listening socket).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from urllib.parse import urlsplit

SS = shutil.which("ss")


def listening_pids(url: str) -> list[int]:
    """The processes holding the listening socket of `url` (empty if `ss` is missing)."""
    if SS is None:
        return []
    port = urlsplit(url).port
    shown = subprocess.run(
        [SS, "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout
    return sorted({int(p) for p in re.findall(r"pid=(\d+)", shown)})


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds of these processes so far (None if one cannot be read)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def tree_pids(pid: int) -> list[int]:
    """`pid` and its descendants (a gateway's workers: uvicorn's, or node cluster's, whose
    primary hands each connection to a worker and so never shares its listening socket)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(parent, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children.get(current, [])
    return out


def rss_mb(pids: list[int]) -> float:
    """Resident memory of these processes together, in MiB (those gone count 0)."""
    total_kb = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                found = re.search(r"VmRSS:\s+(\d+)", status.read())
        except OSError:
            continue
        total_kb += int(found.group(1)) if found else 0
    return total_kb / 1024
