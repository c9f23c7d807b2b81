"""Benchmark: latency a sidecar pair adds, against a direct pod-to-pod call.

Four pods on the local node: a client and a server in an injected namespace (the call goes
client app → client sidecar → server sidecar → server app), and the same pair in a plain
namespace (app → app). wrk runs inside the client pod's network namespace, one connection,
closed loop, so each request's latency is what the path adds. Pinned: the sidecars (Envoy
with ``--concurrency 1``, and the agents, which turn each request's access-log entry into
Istio's metrics) on CPU 0; apps and wrk on CPU 1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pilotfish.testing.node import Node

ROOT = Path(__file__).resolve().parents[3]
APP = ["python3", "-m", "pilotfish.demo.app"]


def config(folder: Path) -> None:
    docs = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: mesh, labels: "
            "{istio-injection: enabled}}\n",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: plain}\n"]
    for namespace in ("mesh", "plain"):
        docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: server, namespace: "
                    f"{namespace}}}\nspec:\n  selector: {{app: server}}\n  ports: "
                    "[{name: http, port: 9080, targetPort: 8080}]\n")
        for app in ("server", "client"):
            docs.append(f"""\
apiVersion: v1
kind: Pod
metadata: {{name: {app}, namespace: {namespace}, labels: {{app: {app}}}}}
spec:
  containers:
  - name: app
    command: [{", ".join(f'"{a}"' for a in APP)}]
    args: ["--serve", "{app}:v1@$(POD_IP):8080"]
    env: [{{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}]
    ports: [{{containerPort: 8080}}]
""")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "latency.yaml").write_text("---\n".join(docs))


def is_sidecar(pid: str) -> bool:
    """Envoy, or a pilotfish agent (found by its command line)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return Path(argv[0].decode()).name == "envoy" or b"agent" in argv[1:4]


def pin(node: Node) -> None:
    """Sidecars (Envoy and agent) to CPU 0, everything else in the pods to CPU 1."""
    if (os.cpu_count() or 1) < 2:
        return
    for pod in node.status()["pods"]:
        pids = subprocess.run(["ip", "netns", "pids", pod["netns"]], capture_output=True,
                              text=True).stdout.split()
        for pid in pids:
            cpu = "0" if is_sidecar(pid) else "1"
            subprocess.run(["taskset", "-a", "-p", "-c", cpu, pid], capture_output=True)


def wrk(node: Node, pod: str, url: str, seconds: int) -> dict[str, Any]:
    argv = ["taskset", "-c", "1"] if (os.cpu_count() or 1) > 1 else []
    out = node.exec(pod, [*argv, "wrk", "-t1", "-c1", f"-d{seconds}s", "--latency", url],
                    timeout=seconds + 30)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    percentiles = {}
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text,
                                       re.MULTILINE):
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
        percentiles[f"p{pct}_ms"] = round(float(value) * scale, 3)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    assert rate and not errors, text
    return {**percentiles, "requests_per_second": float(rate.group(1))}


def measure(tmp: Path, seconds: int) -> dict[str, Any]:
    config(tmp / "config")
    node = Node(tmp, tmp / "config", "10.254.0.0/24", "pfl0",
                extra_args=("--proxy-concurrency", "1")).start()
    try:
        pin(node)
        plain_ip = next(p["ip"] for p in node.status()["pods"]
                        if p["name"] == "server" and p["namespace"] == "plain")
        wrk(node, "mesh/client", "http://server.mesh:9080/", 2)  # warm up
        direct = wrk(node, "plain/client", f"http://{plain_ip}:8080/", seconds)
        mesh = wrk(node, "mesh/client", "http://server.mesh:9080/", seconds)
    finally:
        node.stop()
        node.down()
    added = {k: round(mesh[k] - direct[k], 3) for k in direct if k.endswith("_ms")}
    return {"direct": direct, "sidecar_pair": mesh, "added_ms": added,
            "ratio_p50": round(mesh["p50_ms"] / direct["p50_ms"], 2),
            "seconds_per_run": seconds, "connections": 1,
            "machine": {"cpus": os.cpu_count()}}


def test_latency_small(tmp_path: Path) -> None:
    result = measure(tmp_path, seconds=2)
    assert result["sidecar_pair"]["requests_per_second"] > 0


@pytest.mark.benchmark
def test_latency_benchmark(tmp_path: Path) -> None:
    result = measure(tmp_path, seconds=15)
    out = ROOT / "results" / "latency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
