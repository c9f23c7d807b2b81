"""Soak: 1,000 requests per second for ten minutes through a native sidecar pair with
mutual TLS while the config changes every 10 s; no request may fail and the native
proxies' RSS may grow by under 5 % after the warm-up.

The pair runs as in the sidecar benchmark (``sidecar_node``: a local node, ``--proxy
native --proxy-concurrency 1``, sidecars pinned to CPU 1, the backend and wrk to CPU 0).
wrk (32 keep-alive connections, paced to 1,000 requests per second by ``paced.lua``) runs
the whole time in the client pod. Every 10 s the VirtualService for the backend is
rewritten with a new ``x-push`` response header (a file in the node's config folder,
atomically, as an editor saves it): discovery pushes a new route table to the client
sidecar, and a curl through the pair checks the new value is served; the RSS of each
native proxy and agent is sampled at the same moments. The warm-up is the first 60 s (a
fifth of a shorter run). ``PILOTFISH_SOAK_SECONDS`` sets the length (default 600).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import process_use
import pytest
import sidecar_node
import wrk_runs

from pilotfish.testing.processes import pilotfish

ROOT = Path(__file__).resolve().parents[3]
NETWORK = ("10.245.2.0/24", "pfsc2")
RATE = 1000
CHANGE_EVERY = 10.0
WARM_UP = 60.0
SECONDS = int(os.environ.get("PILOTFISH_SOAK_SECONDS", "600"))


def served(node: Any, push: int, deadline: float) -> float | None:
    """Seconds until a request through the pair answers with ``x-push: push`` (None when
    it did not by ``deadline``); a request that fails is a failure of the soak."""
    written = time.monotonic()
    while time.monotonic() < deadline:
        headers = sidecar_node.answer_headers(node, "mesh/client", sidecar_node.URLS["mtls"])
        assert headers[":status"] == "200", headers
        if headers.get("x-push") == str(push):
            return round(time.monotonic() - written, 2)
        time.sleep(0.2)
    return None


def soak(tmp: Path, seconds: int) -> dict[str, Any]:
    load_before = process_use.load_average()
    node = sidecar_node.start(tmp, "native", *NETWORK, route_header="0")
    samples: list[dict[str, Any]] = []
    try:
        pair = sidecar_node.sidecars(node)
        names = {pid: f"{pod}/{process_use.command(pid)}"
                 for pod, pids in pair.items() for pid in pids}
        natives = [pid for pid, name in names.items() if name.endswith("/native")]
        assert len(natives) == 2, names
        argv = wrk_runs.argv(sidecar_node.URLS["mtls"], seconds, RATE)
        load = subprocess.Popen(
            pilotfish("exec", "--state-dir", str(node.state_dir), "mesh/client", "--", *argv),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started = time.monotonic()
        cpu_start = process_use.cpu_seconds(list(names))
        push = 0
        while True:
            now = time.monotonic() - started
            samples.append({"second": round(now, 1),
                            "rss_mib": {names[pid]: process_use.rss_mib([pid])
                                        for pid in names},
                            "native_rss_mib": process_use.rss_mib(natives)})
            if (push + 1) * CHANGE_EVERY > seconds:
                break
            push += 1
            sidecar_node.set_route_header(node.config_dir, str(push))
            tick = started + push * CHANGE_EVERY
            samples[-1]["push"] = push
            samples[-1]["served_after_s"] = served(node, push, tick - 0.5)
            time.sleep(max(0.0, tick - time.monotonic()))
        stdout, stderr = load.communicate(timeout=seconds + 60)
        cpu_used = process_use.cpu_seconds(list(names)) - cpu_start
    finally:
        sidecar_node.stop(node)
    assert load.returncode == 0, stderr or stdout
    result = wrk_runs.parse(stdout)
    warm = next(s for s in samples if s["second"] >= min(WARM_UP, seconds / 5))
    end = samples[-1]
    delays = [s["served_after_s"] for s in samples if "push" in s]
    timely = sorted(d for d in delays if d is not None)
    return {
        "seconds": seconds, "target_rate": RATE, "load": result,
        "pushes": push, "pushes_not_served_in_time": sum(d is None for d in delays),
        "push_served_after_s": {"median": timely[len(timely) // 2] if timely else None,
                                "max": timely[-1] if timely else None},
        "native_rss_mib": {"after_warm_up": warm["native_rss_mib"],
                           "end": end["native_rss_mib"],
                           "peak": max(s["native_rss_mib"] for s in samples),
                           "growth": round(end["native_rss_mib"] / warm["native_rss_mib"] - 1,
                                           4)},
        "pair_cpu_cores": round(cpu_used / seconds, 3),
        "samples": samples,
        "machine": {"cpus": os.cpu_count(), "load_average_before": load_before,
                    "load_average_after": process_use.load_average()},
    }


def check(result: dict[str, Any]) -> None:
    assert result["load"]["failed"] == 0, result["load"]
    assert result["pushes_not_served_in_time"] == 0
    assert result["native_rss_mib"]["growth"] < 0.05, result["native_rss_mib"]


# A local node and its load: over half a minute, so it runs with ./dev bench, not in the
# suite.
@pytest.mark.benchmark
@pytest.mark.e2e
def test_native_soak_small(tmp_path: Path) -> None:
    result = soak(tmp_path, 20)
    assert result["load"]["failed"] == 0, result["load"]
    assert result["pushes"] == 2 and result["pushes_not_served_in_time"] == 0


@pytest.mark.benchmark
@pytest.mark.timeout(SECONDS + 600)
def test_native_soak(tmp_path: Path) -> None:
    result = soak(tmp_path, SECONDS)
    out = ROOT / "results" / "native_soak.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    check(result)
