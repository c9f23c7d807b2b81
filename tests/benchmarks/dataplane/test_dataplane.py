"""Benchmark: one router proxy (the gateway path), Envoy and native side by side, against
a direct connection, in the same run.

A backend (Envoy with a static direct response of 1 KiB, ``--concurrency 1``) and wrk
(one thread, 32 keep-alive connections, HTTP/1.1) are pinned to CPU 0; the router under
test — ``pilotfish agent --type router`` with ``--proxy envoy`` (``--concurrency 1``) or
``--proxy native``, configured by discovery with a Gateway and a VirtualService to the
backend — to CPU 1. Rounds alternate the proxies; each measures max requests per second,
the latency percentiles at that load, the router's CPU (its process tree, utime + stime
over the run) per 1,000 requests, and its RSS after the run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import process_use
import pytest
import wrk_runs
from process_use import cpu_seconds, rss_mib, tree

from pilotfish.core.native import compiled
from pilotfish.plugins.envoy.backend import envoy_binary
from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import Process, free_port, http, wait_until

ROOT = Path(__file__).resolve().parents[3]
BACKEND_IP = "127.0.22.3"
BODY = "x" * 1024

CONFIG = """\
apiVersion: v1
kind: Service
metadata: {{name: backend, namespace: default}}
spec:
  selector: {{app: backend}}
  ports: [{{name: http, port: 80, targetPort: {backend_port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: backend-1, namespace: default, labels: {{app: backend}}}}
status: {{podIP: {backend}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: backend, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [{gateways}]
  http: [{{route: [{{destination: {{host: backend, port: {{number: 80}}}}}}]}}]
"""
GATEWAY = """\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge-{side}, namespace: default}}
spec:
  selector: {{router: {side}}}
  servers: [{{port: {{number: {port}, name: http, protocol: HTTP}}, hosts: ["*"]}}]
"""


def bench_config(backend_port: int, ports: dict[str, int]) -> str:
    """The backend's service and route, and a Gateway for each router (``router: SIDE``
    on its port), as the data-plane benchmarks configure discovery."""
    return CONFIG.format(backend=BACKEND_IP, backend_port=backend_port,
                         gateways=", ".join(f"edge-{side}" for side in ports)) + "".join(
        GATEWAY.format(side=side, port=port) for side, port in ports.items())


def backend_config(port: int, admin: int) -> dict[str, Any]:
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network."
                    "http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": "backend", "route_config": {"virtual_hosts": [{
               "name": "all", "domains": ["*"], "routes": [{
                   "match": {"prefix": "/"},
                   "direct_response": {"status": 200, "body": {"inline_string": BODY}}}]}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": admin}}},
            "static_resources": {"listeners": [{
                "name": "backend", "address": {"socket_address": {
                    "address": BACKEND_IP, "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm}]}]}]}}


def wrk(url: str, seconds: int) -> dict[str, Any]:
    return wrk_runs.run(url, seconds)


def pin(pid: int, cpu: str) -> None:
    """``pid`` and its descendants (the agent's proxy), every thread, to ``cpu``."""
    process_use.pin(tree(pid), cpu)


def measure(tmp: Path, seconds: int, rounds: int) -> dict[str, Any]:
    backend_port, backend_admin = free_port(), free_port()
    (tmp / "backend.json").write_text(json.dumps(backend_config(backend_port, backend_admin)))
    backend = Process("backend", [str(envoy_binary()), "-c", str(tmp / "backend.json"),
                                  "--concurrency", "1", "--disable-hot-restart",
                                  "-l", "error"], tmp / "backend.log").start()
    results: dict[str, list[dict[str, Any]]] = {"direct": [], "envoy": [], "native": []}
    hot_path: dict[str, Any] = {}
    try:
        wait_until(lambda: http(f"http://{BACKEND_IP}:{backend_port}/").status == 200, 30,
                   what="the backend")
        assert backend.popen is not None
        pin(backend.popen.pid, "0")
        ports = {"envoy": free_port(), "native": free_port()}
        with LocalMesh(tmp / "mesh") as mesh:
            mesh.write("bench.yaml", bench_config(backend_port, ports))
            mesh.start_discovery()
            routers = {}
            for name in ports:
                routers[name] = mesh.start_proxy(
                    f"gw-{name}", "default", labels={"router": name},
                    extra=["--proxy", name, "--concurrency", "1"])
            for name, port in ports.items():
                wait_until(lambda p=port: http(f"http://127.0.0.1:{p}/").status == 200, 30,
                           what=f"the {name} router")
                assert routers[name].process.popen is not None
                pin(routers[name].process.popen.pid, "1")
                wrk(f"http://127.0.0.1:{port}/", 1)  # warm up
            # whether the native router's request path runs compiled (mypyc) or as Python
            hot_path = http(f"{routers['native'].admin}/server_info").json()["hot_path"]
            for _ in range(rounds):
                results["direct"].append(wrk(f"http://{BACKEND_IP}:{backend_port}/", seconds))
                for name, port in ports.items():
                    assert routers[name].process.popen is not None
                    pids = tree(routers[name].process.popen.pid)
                    before = cpu_seconds(pids)
                    each = {pid: cpu_seconds([pid]) for pid in pids}
                    run = wrk(f"http://127.0.0.1:{port}/", seconds)
                    used = cpu_seconds(pids) - before
                    run["cpu_seconds_by_process"] = {
                        process_use.command(pid): round(cpu_seconds([pid]) - start, 2)
                        for pid, start in each.items()}
                    run["cpu_seconds_per_1000_requests"] = round(
                        used / max(run["requests"], 1) * 1000, 4)
                    run["rss_mib"] = rss_mib(pids)
                    results[name].append(run)
                    time.sleep(0.5)
    finally:
        backend.stop()
    best = {name: max(runs, key=lambda r: r["requests_per_second"])
            for name, runs in results.items()}
    return {
        "rounds": results, "best": best, "native_hot_path": hot_path,
        "native_over_envoy_rps": round(best["native"]["requests_per_second"]
                                       / best["envoy"]["requests_per_second"], 3),
        "envoy_over_direct_rps": round(best["envoy"]["requests_per_second"]
                                       / best["direct"]["requests_per_second"], 3),
        "seconds_per_run": seconds, "connections": 32, "body_bytes": len(BODY),
        "machine": {"cpus": os.cpu_count(), "load_average": process_use.load_average()},
    }


def test_dataplane_small(tmp_path: Path) -> None:
    result = measure(tmp_path, seconds=1, rounds=1)
    assert result["best"]["native"]["requests_per_second"] > 0
    assert result["native_hot_path"]["compiled"] is compiled.check().compiled


@pytest.mark.benchmark
def test_dataplane_benchmark(tmp_path: Path) -> None:
    result = measure(tmp_path, seconds=10, rounds=3)
    out = ROOT / "results" / "dataplane.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
