"""Benchmark: xDS push latency, size and control-plane memory with N simulated proxies.

Discovery runs pinned to CPU 0, the load generator (N ADS clients that ACK like Envoy) to
CPU 1. For each ADS flavour: initial sync of N proxies with M services, a one-endpoint
change until every proxy has ACKed it, a change to every cluster until every proxy has
ACKed the new clusters, bytes sent, and discovery's RSS per connected proxy.

``./dev bench`` runs the full size (1,000 x 1,000) and writes results/xds_push.json; the
regular suite runs a small size so that the benchmark itself keeps working.
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
from pilotfish.testing.processes import http, pilotfish, wait_until

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


def run_mode(tmp: Path, mode: str, clients: int, services: int, rounds: int) -> dict[str, Any]:
    mesh = LocalMesh(tmp / mode)
    write_services(mesh.config_dir, services)
    argv = pilotfish("--log-level", "warning", "discovery", "--config-dir", str(mesh.config_dir),
                     "--xds-address", f"127.0.0.1:{mesh.xds_port}",
                     "--debug-address", f"127.0.0.1:{mesh.debug_port}")
    discovery = mesh._process("discovery", pinned(0, argv)).start()
    try:
        wait_until(lambda: discovery.check_running() or http(f"{mesh.debug}/ready").status == 200,
                   120, what="discovery")
        assert discovery.popen is not None
        # taskset execs the interpreter: the pid is discovery's own.
        out = subprocess.run(
            pinned(1, [sys.executable, str(HERE / "loadgen.py"),
                       "--xds", f"127.0.0.1:{mesh.xds_port}",
                       "--debug", f"127.0.0.1:{mesh.debug_port}",
                       "--discovery-pid", str(discovery.popen.pid),
                       "--config-dir", str(mesh.config_dir), "--mode", mode,
                       "--clients", str(clients), "--services", str(services),
                       "--rounds", str(rounds)]),
            capture_output=True, text=True, timeout=1800,
        )
        assert out.returncode == 0, out.stderr[-3000:] + discovery.log()
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        mesh.stop()


def run(tmp: Path, clients: int, services: int, rounds: int) -> dict[str, Any]:
    results = {mode: run_mode(tmp, mode, clients, services, rounds)
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
    results = run(tmp_path, clients=20, services=30, rounds=2)
    for mode in ("sotw", "delta"):
        assert all(t < 5 for t in results[mode]["one_endpoint_change_seconds"])
    assert results["delta"]["one_endpoint_change_bytes"] > 0


@pytest.mark.benchmark
def test_xds_push_full(tmp_path: Path) -> None:
    clients = int(os.environ.get("PILOTFISH_BENCH_CLIENTS", "1000"))
    services = int(os.environ.get("PILOTFISH_BENCH_SERVICES", "1000"))
    results = run(tmp_path, clients, services, rounds=5)
    out = ROOT / "results" / "xds_push.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    for mode in ("sotw", "delta"):
        # Targets (issue #2): a one-endpoint change ACKed by all within 1 s; at most 1 MB of
        # control-plane memory per connected proxy.
        assert max(results[mode]["one_endpoint_change_seconds"]) <= 1.0, results[mode]
        assert results[mode]["discovery_rss_kib_per_proxy"] <= 1024, results[mode]
