"""wrk as the data-plane benchmarks run it: one thread, 32 keep-alive HTTP/1.1 connections,
either as fast as the path answers (closed loop: the maximum rate) or paced to a fixed rate
(``paced.lua``: evenly spaced send times shared by the connections, for the latency at a
load both sides can carry). wrk is pinned to one CPU; the caller says how it is started (on
the host, or inside a pod with ``pilotfish exec``).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PACER = Path(__file__).resolve().with_name("paced.lua")
CONNECTIONS = 32
TWO_CPUS = (os.cpu_count() or 1) > 1
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}

Runner = Callable[[Sequence[str], float], "subprocess.CompletedProcess[str]"]


def on_host(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)


def argv(url: str, seconds: float, rate: int = 0, cpu: str = "0") -> list[str]:
    """wrk's command line; ``rate`` > 0 paces it to that many requests per second."""
    pinned = ["taskset", "-c", cpu] if TWO_CPUS else []
    command = [*pinned, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{int(seconds)}s", "--latency"]
    if rate:
        command += ["-s", str(PACER), url, "--", str(rate)]
    else:
        command.append(url)
    return command


def parse(text: str) -> dict[str, Any]:
    """Rate, requests, latency percentiles (ms) and every kind of failure wrk counts."""
    percentiles = {}
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text,
                                       re.MULTILINE):
        percentiles[f"p{pct}_ms"] = round(float(value) * UNITS[unit], 3)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    requests = re.search(r"(\d+) requests in", text)
    assert rate and requests, text
    errors = {"non_2xx": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0}
    if found := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        errors["non_2xx"] = int(found.group(1))
    if found := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                          r"timeout (\d+)", text):
        for key, value in zip(("connect", "read", "write", "timeout"), found.groups(), strict=True):
            errors[key] = int(value)
    return {**percentiles, "requests_per_second": float(rate.group(1)),
            "requests": int(requests.group(1)), "errors": errors,
            "failed": sum(errors.values())}


def run(url: str, seconds: float, rate: int = 0, runner: Runner = on_host) -> dict[str, Any]:
    """One wrk run; a non-2xx answer fails it (socket errors are counted, see ``failed``)."""
    out = runner(argv(url, seconds, rate), seconds + 60)
    assert out.returncode == 0, out.stderr or out.stdout
    result = parse(out.stdout)
    assert not result["errors"]["non_2xx"], out.stdout
    if rate:
        result["target_rate"] = rate
    return result
