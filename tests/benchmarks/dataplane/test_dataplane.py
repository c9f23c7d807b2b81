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
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pilotfish.plugins.envoy.backend import envoy_binary
from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import Process, free_port, http, wait_until

ROOT = Path(__file__).resolve().parents[3]
BACKEND_IP = "127.0.22.3"
TWO_CPUS = (os.cpu_count() or 1) > 1
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
  gateways: [edge-envoy, edge-native]
  http: [{{route: [{{destination: {{host: backend, port: {{number: 80}}}}}}]}}]
"""
GATEWAY = """\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge-{proxy}, namespace: default}}
spec:
  selector: {{router: {proxy}}}
  servers: [{{port: {{number: {port}, name: http, protocol: HTTP}}, hosts: ["*"]}}]
"""


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


def pin(pid: int, cpu: str) -> None:
    """``pid`` and its descendants (the agent's proxy), every thread, to ``cpu``."""
    if TWO_CPUS:
        for each in tree(pid):
            subprocess.run(["taskset", "-a", "-p", "-c", cpu, str(each)], capture_output=True,
                           check=False)


def tree(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout.split()
    return [pid, *(p for child in out for p in tree(int(child)))]


def _command(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    words = [a.decode() for a in argv if a]
    for known in ("pilotfish.core.native", "agent", "setpriv", "envoy"):
        if any(known in w for w in words[:6]):
            return "native" if known == "pilotfish.core.native" else known
    return Path(words[0]).name if words else str(pid)


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


def wrk(url: str, seconds: int) -> dict[str, Any]:
    argv = ["taskset", "-c", "0"] if TWO_CPUS else []
    out = subprocess.run([*argv, "wrk", "-t1", "-c32", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, timeout=seconds + 60)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    percentiles = {}
    for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", text,
                                       re.MULTILINE):
        percentiles[f"p{pct}_ms"] = round(float(value) * {"us": 0.001, "ms": 1.0,
                                                            "s": 1000.0}[unit], 3)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    requests = re.search(r"(\d+) requests in", text)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    assert rate and requests and not errors, text
    return {**percentiles, "requests_per_second": float(rate.group(1)),
            "requests": int(requests.group(1))}


def measure(tmp: Path, seconds: int, rounds: int) -> dict[str, Any]:
    backend_port, backend_admin = free_port(), free_port()
    (tmp / "backend.json").write_text(json.dumps(backend_config(backend_port, backend_admin)))
    backend = Process("backend", [str(envoy_binary()), "-c", str(tmp / "backend.json"),
                                  "--concurrency", "1", "--disable-hot-restart",
                                  "-l", "error"], tmp / "backend.log").start()
    results: dict[str, list[dict[str, Any]]] = {"direct": [], "envoy": [], "native": []}
    try:
        wait_until(lambda: http(f"http://{BACKEND_IP}:{backend_port}/").status == 200, 30,
                   what="the backend")
        assert backend.popen is not None
        pin(backend.popen.pid, "0")
        ports = {"envoy": free_port(), "native": free_port()}
        with LocalMesh(tmp / "mesh") as mesh:
            mesh.write("bench.yaml", CONFIG.format(backend=BACKEND_IP,
                                                   backend_port=backend_port) + "".join(
                GATEWAY.format(proxy=name, port=port) for name, port in ports.items()))
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
                        _command(pid): round(cpu_seconds([pid]) - start, 2)
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
        "rounds": results, "best": best,
        "native_over_envoy_rps": round(best["native"]["requests_per_second"]
                                       / best["envoy"]["requests_per_second"], 3),
        "envoy_over_direct_rps": round(best["envoy"]["requests_per_second"]
                                       / best["direct"]["requests_per_second"], 3),
        "seconds_per_run": seconds, "connections": 32, "body_bytes": len(BODY),
        "machine": {"cpus": os.cpu_count()},
    }


def test_dataplane_small(tmp_path: Path) -> None:
    result = measure(tmp_path, seconds=1, rounds=1)
    assert result["best"]["native"]["requests_per_second"] > 0


@pytest.mark.benchmark
def test_dataplane_benchmark(tmp_path: Path) -> None:
    result = measure(tmp_path, seconds=10, rounds=3)
    out = ROOT / "results" / "dataplane.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
