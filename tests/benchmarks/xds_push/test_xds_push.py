"""Benchmark: xDS push latency, size and control-plane CPU and memory with N simulated
proxies, each on a connection of its own (as Envoys are).

Discovery runs pinned to CPU 0, the load generator (N ADS clients that ACK like Envoy) to
CPU 1. For each ADS flavour: initial sync of N proxies with M services, a one-endpoint
change until every proxy has ACKed it, a minute of one endpoint change per second (CPU of
discovery and of the generator over it), a change to one service's and to every cluster
until every proxy has ACKed the new clusters, bytes sent, and discovery's RSS.

``./dev bench`` runs the full size (2,000 x 1,000, istiod's published sizing point) and
writes results/xds_push.json; the regular suite runs a small size so that the benchmark
itself keeps working.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import Process, http, pilotfish, wait_until

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def write_services(config: Path, services: int) -> None:
    config.mkdir(parents=True, exist_ok=True)
    for k in range(services):
        (config / f"svc-{k}.yaml").write_text(f"""\
apiVersion: v1
kind: Service
metadata: {{name: svc-{k}, namespace: ns-0}}
spec:
  clusterIP: 10.96.{k // 250}.{k % 250 + 1}
  selector: {{app: svc-{k}}}
  ports: [{{name: http, port: 9080, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: svc-{k}-0, namespace: ns-0, labels: {{app: svc-{k}}}}}
status: {{podIP: 10.{k // 62500}.{(k // 250) % 250}.{k % 250 + 1}}}
""")


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if os.cpu_count() and os.cpu_count() > 1 else argv


def start_discovery(mesh: LocalMesh, services: int) -> Process:
    write_services(mesh.config_dir, services)
    # Every simulated proxy comes from 127.0.0.1: one address holding thousands of streams,
    # which discovery's per-address limit (1,024 by default) is there to refuse. And they
    # share one core: while it parses the first proxies' answers, the last ones' first
    # requests (and reads) can wait longer than an Envoy of its own would ever take.
    mesh_config = mesh.workdir / "pilotfish.yaml"
    mesh_config.write_text("discovery:\n  xdsLimits: {streamsPerPeer: 100000, "
                           "firstRequestTimeout: 300s, sendTimeout: 300s}\n")
    argv = pilotfish("--log-level", "warning", "discovery", "--config-dir", str(mesh.config_dir),
                     "--mesh-config", str(mesh_config),
                     "--secure-xds-address", "",  # plaintext only: no port shared with a node
                     "--xds-address", f"127.0.0.1:{mesh.xds_port}",
                     "--debug-address", f"127.0.0.1:{mesh.debug_port}")
    discovery = mesh._process("discovery", pinned(0, argv)).start()
    wait_until(lambda: discovery.check_running() or http(f"{mesh.debug}/ready").status == 200,
               120, what="discovery")
    return discovery


def loadgen(mesh: LocalMesh, discovery: Process, mode: str, clients: int, services: int,
            *extra: str) -> dict[str, Any]:
    """Run the load generator on CPU 1 against a running discovery; its JSON result."""
    assert discovery.popen is not None
    # taskset execs the interpreter: the pid is discovery's own.
    out = subprocess.run(
        pinned(1, [sys.executable, str(HERE / "loadgen.py"),
                   "--xds", f"127.0.0.1:{mesh.xds_port}",
                   "--debug", f"127.0.0.1:{mesh.debug_port}",
                   "--discovery-pid", str(discovery.popen.pid),
                   "--config-dir", str(mesh.config_dir), "--mode", mode,
                   "--clients", str(clients), "--services", str(services), *extra]),
        capture_output=True, text=True, timeout=3600,
    )
    assert out.returncode == 0, out.stderr[-3000:] + discovery.log()
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run_mode(tmp: Path, mode: str, clients: int, services: int, rounds: int,
             churn_seconds: float) -> dict[str, Any]:
    mesh = LocalMesh(tmp / mode)
    try:
        discovery = start_discovery(mesh, services)
        return loadgen(mesh, discovery, mode, clients, services, "--rounds", str(rounds),
                       "--churn-seconds", str(churn_seconds))
    finally:
        mesh.stop()


def run(tmp: Path, clients: int, services: int, rounds: int,
        churn_seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {mode: run_mode(tmp, mode, clients, services, rounds,
                                              churn_seconds)
                               for mode in ("sotw", "delta")}
    results["delta_vs_sotw_bytes"] = {
        phase: round(results["delta"][phase] / max(1, results["sotw"][phase]), 3)
        for phase in ("initial_bytes", "one_endpoint_change_bytes", "one_service_change_bytes",
                      "full_push_bytes")
    }
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    return results


def test_xds_push_small(tmp_path: Path) -> None:
    """The benchmark at a small size, so the regular suite keeps it working."""
    results = run(tmp_path, clients=20, services=30, rounds=2, churn_seconds=3)
    for mode in ("sotw", "delta"):
        assert all(t < 5 for t in results[mode]["one_endpoint_change_seconds"])
        assert results[mode]["connections"] == 20  # each proxy its own stream ...
        assert results[mode]["tcp_connections"] == 20  # ... on a connection of its own
        assert results[mode]["churn_changes"] >= 2
    assert results["delta"]["one_endpoint_change_bytes"] > 0


@pytest.mark.benchmark
@pytest.mark.timeout(2 * 3600)  # two flavours of 2,000 proxies: far past the suite's 300 s
def test_xds_push_full(tmp_path: Path) -> None:
    clients = int(os.environ.get("PILOTFISH_BENCH_CLIENTS", "2000"))
    services = int(os.environ.get("PILOTFISH_BENCH_SERVICES", "1000"))
    results = run(tmp_path, clients, services, rounds=5, churn_seconds=60)
    out = ROOT / "results" / "xds_push.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    for mode in ("sotw", "delta"):
        r = results[mode]
        # Targets (issue #9, istiod's sizing: 1 vCPU and 1.5 GB for 1,000 services and
        # 2,000 sidecars): a one-endpoint change ACKed by all within 1 s, also through a
        # minute of one change per second; discovery at most 750 MB RSS and 1 core on
        # average over that minute.
        assert r["connections"] == r["tcp_connections"] == clients, r
        assert max(r["one_endpoint_change_seconds"]) <= 1.0, r
        assert r["churn_change_seconds_max"] <= 1.0, r
        assert r["discovery_rss_kib_peak"] <= 750 * 1024, r
        assert r["churn_cpu"]["discovery_cores"] <= 1.0, r


def soak(tmp: Path, mode: str, clients: int, services: int, *extra: str) -> dict[str, Any]:
    mesh = LocalMesh(tmp / f"soak-{mode}")
    try:
        discovery = start_discovery(mesh, services)
        return loadgen(mesh, discovery, mode, clients, services, "--scenario", "soak", *extra)
    finally:
        mesh.stop()


def test_soak_small(tmp_path: Path) -> None:
    """The soak at a small size and a few seconds, so the regular suite keeps it working."""
    result = soak(tmp_path, "delta", 20, 20, "--duration", "12", "--hold-min", "1",
                  "--hold-max", "3", "--sample-every", "2", "--baseline-at", "4")
    assert result["synced_connects"] > 20  # they came back, with fresh labels
    assert result["samples"][-1]["connections"] <= 20


@pytest.mark.benchmark
@pytest.mark.timeout(3600)
def test_soak_full(tmp_path: Path) -> None:
    """1,000 proxies reconnecting with fresh labels (a new scope each time) for 10 minutes
    while config changes every second: discovery's RSS at the end within 10 % of its RSS
    after the first minute."""
    clients = int(os.environ.get("PILOTFISH_SOAK_CLIENTS", "1000"))
    services = int(os.environ.get("PILOTFISH_SOAK_SERVICES", "100"))
    duration = os.environ.get("PILOTFISH_SOAK_SECONDS", "600")
    result = soak(tmp_path, "delta", clients, services, "--duration", duration)
    out = ROOT / "results" / "soak.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    assert result["rss_growth_after_first_minute"] <= 0.10, result
