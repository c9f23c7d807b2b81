"""Benchmark: two ambient pods through ztunnel at a fixed 1,000 req/s (ztunnel's CPU and
RSS beside Istio's published numbers), and the same path's maximum rate against the Envoy
mutual-TLS sidecar pair, in the same run on the same node.

One local node (``sidecar_node.start(..., ambient=True)``: ``pilotfish up --proxy envoy
--proxy-concurrency 1`` with the mesh config's ``profile: [sidecar, ambient]``) holds both
paths, so they share the machine, the bridge and the backend's code:

- **ambient**: namespace ``ambient`` (``istio.io/dataplane-mode: ambient``), wrk in the
  client pod → the in-pod rules → ztunnel's 15001 in the client's netns → HBONE (HTTP/2
  CONNECT over mutual TLS with the client's own certificate, pooled) → ztunnel's 15008 in
  the server's netns → the backend, delivered from the client's address. Both pods are on
  this node, so one ztunnel carries both ends of every request, as Istio's ztunnel does for
  two pods on one node.
- **envoy/mtls**: namespace ``mesh``, the sidecar pair of ``tests/benchmarks/sidecars``
  (auto mTLS between two Envoy sidecars and their agents).

Pinned as the other data-plane benchmarks: ztunnel (every thread) and both sidecars on CPU
1, wrk (one thread, 32 keep-alive HTTP/1.1 connections) and the backend (Envoy answering
1 KiB, ``--concurrency 1``) on CPU 0. Discovery and the CNI node agent sit idle, unpinned.

Each round runs both paths paced to ``RATE`` (``paced.lua``) — ztunnel's CPU over the run
is its vCPU at that rate, the sidecar pair's likewise for comparison — then both at full
speed (closed loop) for the maximum. Each run follows ``WARM`` seconds of the same load,
unmeasured. The paths alternate within a round so a burst of someone else's work on this
shared machine lands on one run, not one path; the maximum is the best round, the vCPU the
median round. The warm-up runs at ``RATE`` too. ztunnel's RSS is read when it has started,
after the warm-up, after the first round's run at ``RATE`` — the issue's condition, "at a
fixed 1,000 req/s", and what the target is held to — and after every run, the full-speed
ones included (reported beside it: full speed holds more streams and buffers at once); its
pid is checked at the end (a ztunnel restarted mid-run would measure a different process).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import process_use
import pytest
import sidecar_node
from sidecar_node import AMBIENT_CLIENT, AMBIENT_URL, URLS

ROOT = Path(__file__).resolve().parents[3]
SUBNET, BRIDGE = "10.245.4.0/24", "pfamb4"
RATE = 1000
WARM = 2
# Istio's published ztunnel figures per 1,000 req/s, and the targets for this one.
PUBLISHED = {"vcpu": 0.06, "rss_mb": 12}
TARGETS = {"vcpu": 0.12, "rss_mb": 30}
PATHS = ("ambient", "envoy/mtls")


def run_path(node: Any, path: str, seconds: int, rate: int, ztunnel: int,
             pair: dict[str, list[int]]) -> dict[str, Any]:
    """One measured wrk run of ``path`` after ``WARM`` s of the same load: the load's
    result, and the CPU of what carries it (ztunnel, or the sidecar pair)."""
    pod, url = (AMBIENT_CLIENT, AMBIENT_URL) if path == "ambient" else \
        ("mesh/client", URLS["mtls"])
    sidecar_node.wrk(node, url, WARM, rate, pod)
    if path == "ambient":
        before = {"ztunnel": process_use.cpu_seconds([ztunnel])}
    else:
        before = sidecar_node.usage(pair)
    result = sidecar_node.wrk(node, url, seconds, rate, pod)
    if path == "ambient":
        after = {"ztunnel": process_use.cpu_seconds([ztunnel])}
        result["rss_mib"] = process_use.rss_mib([ztunnel])
    else:
        after = sidecar_node.usage(pair)
        result["rss_mib"] = round(sum(sidecar_node.rss(pair).values()), 1)
    used = {name: round(after[name] - before[name], 2) for name in before}
    total = sum(used.values())
    result["cpu_seconds_by_process"] = used
    result["vcpu"] = round(total / seconds, 4)
    result["cpu_seconds_per_1000_requests"] = round(total / max(result["requests"], 1) * 1000,
                                                    4)
    time.sleep(0.5)
    return result


def mb(mib: float) -> float:
    return round(mib * 1024 * 1024 / 1e6, 1)


def measure(tmp: Path, seconds: int, rounds: int) -> dict[str, Any]:
    started = time.monotonic()
    load_before = process_use.load_average()
    node = sidecar_node.start(tmp / "node", "envoy", SUBNET, BRIDGE, ambient=True)
    try:
        ztunnel = sidecar_node.ztunnel(node)
        pair = sidecar_node.sidecars(node)
        rss_start = process_use.rss_mib([ztunnel])
        for path in PATHS:  # warm-up: pools, certificates, first allocations
            pod, url = (AMBIENT_CLIENT, AMBIENT_URL) if path == "ambient" else \
                ("mesh/client", URLS["mtls"])
            sidecar_node.wrk(node, url, 2, RATE, pod)
        rss_warm = {"ztunnel": process_use.rss_mib([ztunnel]),
                    "envoy_pair": round(sum(sidecar_node.rss(pair).values()), 1)}
        paced: dict[str, list[dict[str, Any]]] = {path: [] for path in PATHS}
        maxima: dict[str, list[dict[str, Any]]] = {path: [] for path in PATHS}
        for _ in range(rounds):
            for path in PATHS:
                paced[path].append(run_path(node, path, seconds, RATE, ztunnel, pair))
            for path in reversed(PATHS):
                maxima[path].append(run_path(node, path, seconds, 0, ztunnel, pair))
        rss_after = {"ztunnel": process_use.rss_mib([ztunnel]),
                     "envoy_pair": round(sum(sidecar_node.rss(pair).values()), 1)}
        assert sidecar_node.ztunnel(node) == ztunnel, "ztunnel restarted during the run"
        log_tail = node.log("ztunnel.log")[-2000:]
    finally:
        sidecar_node.stop(node)
    vcpu = {path: statistics.median(r["vcpu"] for r in runs) for path, runs in paced.items()}
    best_max = {path: max(runs, key=lambda r: r["requests_per_second"])
                for path, runs in maxima.items()}
    # at the fixed rate: the first round's run at RATE came before any full-speed one
    ztunnel_rss = paced["ambient"][0]["rss_mib"]
    ambient_max = best_max["ambient"]["requests_per_second"]
    envoy_max = best_max["envoy/mtls"]["requests_per_second"]
    return {
        "fixed_rate": {"rate": RATE, "rounds": paced, "median_vcpu": vcpu,
                       "median_p50_ms": {p: statistics.median(r["p50_ms"] for r in runs)
                                         for p, runs in paced.items()},
                       "median_p99_ms": {p: statistics.median(r["p99_ms"] for r in runs)
                                         for p, runs in paced.items()}},
        "max": {"rounds": maxima, "best": best_max},
        "ztunnel_rss_mib": {"started": rss_start, "after_warmup": rss_warm["ztunnel"],
                            "at_fixed_rate": ztunnel_rss,
                            "after_runs": rss_after["ztunnel"]},
        "envoy_pair_rss_mib": {"after_warmup": rss_warm["envoy_pair"],
                               "after_runs": rss_after["envoy_pair"]},
        "verdicts": {
            "ztunnel_vcpu_at_1000": {"value": vcpu["ambient"], "published": PUBLISHED["vcpu"],
                                     "target": f"<= {TARGETS['vcpu']}",
                                     "met": vcpu["ambient"] <= TARGETS["vcpu"]},
            "ztunnel_rss_mb": {"value": mb(ztunnel_rss), "published": PUBLISHED["rss_mb"],
                               "target": f"<= {TARGETS['rss_mb']}",
                               "met": mb(ztunnel_rss) <= TARGETS["rss_mb"],
                               "after_full_speed_runs": mb(rss_after["ztunnel"])},
            "max_rps_ambient_over_envoy_mtls_pair": round(ambient_max / envoy_max, 3)
            if envoy_max else None,
            # the same load, the same run: what a busy shared machine does to both cancels
            "vcpu_at_1000_ztunnel_over_envoy_pair": round(
                vcpu["ambient"] / vcpu["envoy/mtls"], 3) if vcpu["envoy/mtls"] else None,
        },
        "ztunnel_log_tail": log_tail,
        "seconds_per_run": seconds, "rounds_run": rounds, "connections": 32,
        "body_bytes": len(sidecar_node.BODY), "wall_seconds": round(time.monotonic() - started),
        "machine": {"cpus": os.cpu_count(), "load_average_before": load_before,
                    "load_average_after": process_use.load_average()},
    }


# A local node with ambient and a sidecar pair: about a minute even small, so it runs with
# ./dev bench, as the sidecar pairs do, not in the suite.
@pytest.mark.benchmark
@pytest.mark.e2e
def test_ambient_small(tmp_path: Path) -> None:
    result = measure(tmp_path, seconds=2, rounds=1)
    ambient = result["fixed_rate"]["rounds"]["ambient"][0]
    assert ambient["failed"] == 0, ambient
    assert result["max"]["best"]["ambient"]["requests_per_second"] > 0


@pytest.mark.benchmark
@pytest.mark.timeout(1200)
def test_ambient_benchmark(tmp_path: Path) -> None:
    result = measure(tmp_path, seconds=10, rounds=3)
    out = ROOT / "results" / "ambient.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["verdicts"], indent=2))
    for round_ in result["fixed_rate"]["rounds"]["ambient"]:
        assert round_["failed"] == 0, round_
        assert round_["requests_per_second"] >= 0.95 * RATE, round_
