"""What the processes under test use, read from /proc: CPU (utime + stime), RSS, and which
process is which; and pinning them, every thread, to one CPU."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

TWO_CPUS = (os.cpu_count() or 1) > 1


def pin(pids: list[int], cpu: str) -> None:
    """Every thread of ``pids`` to ``cpu`` (no-op on one CPU)."""
    if TWO_CPUS:
        for pid in pids:
            subprocess.run(["taskset", "-a", "-p", "-c", cpu, str(pid)], capture_output=True,
                           check=False)


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (an agent and its proxy)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout.split()
    return [pid, *(p for child in out for p in tree(int(child)))]


def command(pid: int) -> str:
    """A short name: ``native`` (the native proxy), ``agent``, ``envoy``, ``setpriv``."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    words = [a.decode() for a in argv if a]
    for known in ("pilotfish.core.native", "agent", "setpriv", "envoy"):
        if any(known in w for w in words[:6]):
            return "native" if known == "pilotfish.core.native" else known
    return Path(words[0]).name if words else str(pid)


def uid(pid: int) -> int:
    """The real uid of ``pid`` (-1 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (``uptime``'s), to say how busy the machine
    was: other people's work shares these CPUs."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
