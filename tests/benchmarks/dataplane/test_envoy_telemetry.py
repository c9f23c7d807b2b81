"""Benchmark: what pilotfish's configuration and Istio's metrics cost an Envoy router.

Beside ``test_dataplane`` and on its set-up (the backend, the mesh config, pinning, wrk):
the Envoy router as pilotfish configures it — ``pilotfish agent --type router --proxy
envoy``, Envoy ``--concurrency 1``, discovery's Gateway and VirtualService, the agent
turning Envoy's access-log entries into Istio's metrics — against ``envoy-minimal``, a
hand-written static Envoy router (``--concurrency 1``, the same route to the same backend,
no access log, no agent). Both on CPU 1, the agent with its Envoy (its work on the entries
is the point); wrk (32 connections) and the backend on CPU 0. Rounds alternate; the best
round of each is compared. After the rounds the agent's ``istio_requests_total`` must
account for every request wrk sent: the metrics kept up.

``test_envoy_loggers_benchmark`` asks what each way of getting a request out of Envoy costs
Envoy itself: the minimal router with one access logger at a time — none, the text line on
stdout, the gRPC entry (``http_grpc``, as pilotfish configures it), an OpenTelemetry
record carrying only the fields the metrics need, stock Envoy's ``stats`` logger
counting Istio's series in Envoy, pilotfish's metrics module (``dynamic_module``: its own
table of series, ``plugins/envoy/istio_stats.c``) and, beside it, the ABI's own stats path
(``dynamic_module_abi_counter``: the same fields read, one Envoy counter incremented,
``abi_counter.c``) — each Envoy's CPU per request, gRPC entries sent to a sink on CPU 0
that only receives them. ``test_module_cost_benchmark`` times the module's own work with
Envoy played by stubs (``module_cost.c``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest
from google.protobuf.json_format import MessageToDict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dataplane import (
    BACKEND_IP,
    backend_config,
    bench_config,
    cpu_seconds,
    pin,
    rss_mib,
    tree,
    wrk,
)

from pilotfish.plugins.envoy import stats_module
from pilotfish.plugins.envoy.backend import envoy_binary, envoy_version
from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import Process, free_port, http, wait_until
from pilotfish.translators.access_logs import for_http
from pilotfish.translators.stats_module import module_logger

ROOT = Path(__file__).resolve().parents[3]


def minimal_router_config(port: int, admin: int, backend_port: int) -> dict[str, Any]:
    """Envoy as a minimal router by hand: one listener, the route to the backend, the
    router filter; no access log, no discovery."""
    cluster = "backend"
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network."
                    "http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": "router", "route_config": {"virtual_hosts": [{
               "name": "all", "domains": ["*"], "routes": [{
                   "match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    endpoint = {"address": {"socket_address": {"address": BACKEND_IP,
                                               "port_value": backend_port}}}
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": admin}}},
            "static_resources": {
                "listeners": [{"name": "router", "address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": hcm}]}]}],
                "clusters": [{"name": cluster, "type": "STATIC", "connect_timeout": "1s",
                              "load_assignment": {"cluster_name": cluster, "endpoints": [{
                                  "lb_endpoints": [{"endpoint": endpoint}]}]}}]}}


def istio_requests(status_port: int) -> int:
    """``istio_requests_total`` summed over its series, from the agent's merged scrape."""
    text = http(f"http://127.0.0.1:{status_port}/stats/prometheus").body.decode()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("istio_requests_total{")))


def _process_name(pid: int) -> str:
    words = [w for w in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if w]
    return "agent" if any(b"agent" in w for w in words[:6]) else Path(
        words[0].decode()).name if words else str(pid)


def measure(tmp: Path, seconds: int, rounds: int) -> dict[str, Any]:
    backend_port = free_port()
    (tmp / "backend.json").write_text(json.dumps(backend_config(backend_port, free_port())))
    backend = Process("backend", [str(envoy_binary()), "-c", str(tmp / "backend.json"),
                                  "--concurrency", "1", "--disable-hot-restart",
                                  "-l", "error"], tmp / "backend.log").start()
    ports = {"envoy": free_port(), "envoy-minimal": free_port()}
    (tmp / "minimal.json").write_text(json.dumps(minimal_router_config(
        ports["envoy-minimal"], free_port(), backend_port)))
    minimal = Process("envoy-minimal", [
        str(envoy_binary()), "-c", str(tmp / "minimal.json"), "--concurrency", "1",
        "--disable-hot-restart", "-l", "error"], tmp / "minimal.log")
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in ports}
    try:
        wait_until(lambda: http(f"http://{BACKEND_IP}:{backend_port}/").status == 200, 30,
                   what="the backend")
        assert backend.popen is not None
        pin(backend.popen.pid, "0")
        minimal.start()
        with LocalMesh(tmp / "mesh") as mesh:
            mesh.write("bench.yaml", bench_config(backend_port, {"envoy": ports["envoy"]}))
            mesh.start_discovery()
            router = mesh.start_proxy("gw-envoy", "default", labels={"router": "envoy"},
                                      extra=["--proxy", "envoy", "--concurrency", "1"])
            assert router.process.popen is not None and minimal.popen is not None
            roots = {"envoy": router.process.popen.pid, "envoy-minimal": minimal.popen.pid}
            for name, port in ports.items():
                wait_until(lambda p=port: http(f"http://127.0.0.1:{p}/").status == 200, 30,
                           what=f"the {name} router")
                pin(roots[name], "1")
            sent = 0
            for _ in range(rounds):
                for name, port in ports.items():
                    wrk(f"http://127.0.0.1:{port}/", 1)  # warm up (and let the last one settle)
                    pids = tree(roots[name])
                    each = {pid: cpu_seconds([pid]) for pid in pids}
                    run = wrk(f"http://127.0.0.1:{port}/", seconds)
                    used = {_process_name(pid): round(cpu_seconds([pid]) - start, 2)
                            for pid, start in each.items()}
                    run["cpu_seconds_by_process"] = used
                    run["cpu_seconds_per_1000_requests"] = round(
                        sum(used.values()) / max(run["requests"], 1) * 1000, 4)
                    run["rss_mib"] = rss_mib(pids)
                    if name == "envoy":
                        sent += run["requests"]
                    results[name].append(run)
            time.sleep(2)  # Envoy sends access-log entries within a second
            counted = istio_requests(router.status_port)
    finally:
        minimal.stop()
        backend.stop()
    best = {name: max(runs, key=lambda r: r["requests_per_second"])
            for name, runs in results.items()}
    return {
        "rounds": results, "best": best,
        "envoy_over_minimal_rps": round(best["envoy"]["requests_per_second"]
                                        / best["envoy-minimal"]["requests_per_second"], 3),
        "istio_requests_total": counted, "requests_measured": sent,
        "seconds_per_run": seconds, "connections": 32,
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
    }


# Envoy's access loggers, one at a time on the minimal router (see the module's docstring).
SINK_CLUSTER = "als-grpc"
_GRPC = {"envoy_grpc": {"cluster_name": SINK_CLUSTER}}
_TAGS = [{"name": name, "value_format": value} for name, value in (
    ("cluster", "%UPSTREAM_CLUSTER_RAW%"), ("code", "%RESPONSE_CODE%"),
    ("flags", "%RESPONSE_FLAGS%"), ("peer", "%DOWNSTREAM_PEER_URI_SAN%"),
    ("local", "%DOWNSTREAM_LOCAL_URI_SAN%"), ("content_type", "%REQ(content-type)%"),
    ("grpc_status", "%GRPC_STATUS_NUMBER%"))]
LOGGERS: dict[str, list[dict[str, Any]]] = {
    "none": [],
    "stdout": [MessageToDict(for_http()[0])],
    "http_grpc": [MessageToDict(for_http()[1])],
    "open_telemetry": [{"name": "envoy.access_loggers.open_telemetry", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3."
                 "OpenTelemetryAccessLogConfig",
        "common_config": {"log_name": "metrics", "grpc_service": _GRPC,
                          "transport_api_version": "V3"},
        "disable_builtin_labels": True,
        "body": {"string_value": " ".join(f"%{field}%" for field in (
            "UPSTREAM_CLUSTER_RAW", "RESPONSE_CODE", "RESPONSE_FLAGS",
            "DOWNSTREAM_PEER_URI_SAN", "DOWNSTREAM_LOCAL_URI_SAN", "REQ(content-type)",
            "GRPC_STATUS_NUMBER", "DURATION", "CEL(request.total_size)",
            "CEL(response.total_size)"))}}}],
    "stats": [{"name": "envoy.access_loggers.stats", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.stats.v3.Config",
        "stat_prefix": "istio",
        "counters": [{"stat": {"name": "requests_total", "tags": _TAGS}, "value_fixed": 1}],
        "histograms": [{"stat": {"name": name, "tags": _TAGS}, "unit": unit,
                        "value_format": value} for name, unit, value in (
            ("request_duration_milliseconds", "Milliseconds", "%DURATION%"),
            ("request_bytes", "Bytes", "%CEL(request.total_size)%"),
            ("response_bytes", "Bytes", "%CEL(response.total_size)%"))]}}],
}


def module_loggers(tmp: Path) -> dict[str, list[dict[str, Any]]]:
    """The two dynamic-module loggers, built for this Envoy into ``tmp``."""
    module = stats_module.build(envoy_version(str(envoy_binary())), tmp)
    abi = tmp / "libabi_counter.so"
    subprocess.run([stats_module.compiler(), *stats_module.FLAGS, "-o", str(abi),
                    str(Path(__file__).with_name("abi_counter.c"))], check=True)
    return {"dynamic_module": [MessageToDict(module_logger(str(module),
                                                           str(tmp / "istio-stats.table")))],
            "dynamic_module_abi_counter": [MessageToDict(module_logger(str(abi), ""))]}


def logger_router_config(port: int, backend_port: int, loggers: list[dict[str, Any]],
                         sink: Path) -> dict[str, Any]:
    config = minimal_router_config(port, free_port(), backend_port)
    resources = config["static_resources"]
    resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "access_log"] = loggers
    resources["clusters"].append({
        "name": SINK_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": SINK_CLUSTER, "endpoints": [{"lb_endpoints": [{
            "endpoint": {"address": {"pipe": {"path": str(sink)}}}}]}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                         "HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}})
    return config


class Sink:
    """Receives gRPC access logs and OpenTelemetry exports, reads nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages = 0
        self.started = threading.Event()

    def run(self) -> None:
        anyio.run(self._serve, backend="asyncio")

    async def _serve(self) -> None:
        async def stream(requests: AsyncIterator[bytes], _: Any) -> bytes:
            async for _message in requests:
                self.messages += 1
            return b""

        async def export(_request: bytes, _: Any) -> bytes:
            self.messages += 1
            return b""

        same = {"request_deserializer": bytes, "response_serializer": bytes}
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler(
                "envoy.service.accesslog.v3.AccessLogService",
                {"StreamAccessLogs": grpc.stream_unary_rpc_method_handler(stream, **same)}),
            grpc.method_handlers_generic_handler(
                "opentelemetry.proto.collector.logs.v1.LogsService",
                {"Export": grpc.unary_unary_rpc_method_handler(export, **same)})))
        server.add_insecure_port(f"unix:{self.path}")
        await server.start()
        self.started.set()
        await server.wait_for_termination()


def measure_loggers(tmp: Path, seconds: int, rounds: int) -> dict[str, Any]:
    """Each logger's Envoy CPU per request (median over rounds), beside ``none``."""
    backend_port = free_port()
    (tmp / "backend.json").write_text(json.dumps(backend_config(backend_port, free_port())))
    sink = Sink(tmp / "sink")
    threading.Thread(target=sink.run, daemon=True).start()  # ends with the test process
    assert sink.started.wait(10)
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})  # the sink's thread beside wrk, off the routers' CPU
    backend = Process("backend", [str(envoy_binary()), "-c", str(tmp / "backend.json"),
                                  "--concurrency", "1", "--disable-hot-restart", "-l",
                                  "error"], tmp / "backend.log").start()
    routers: dict[str, tuple[Process, int]] = {}
    every = {**LOGGERS, **module_loggers(tmp)}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in every}
    try:
        wait_until(lambda: http(f"http://{BACKEND_IP}:{backend_port}/").status == 200, 30,
                   what="the backend")
        assert backend.popen is not None
        pin(backend.popen.pid, "0")
        for name, loggers in every.items():
            port = free_port()
            (tmp / f"{name}.json").write_text(json.dumps(logger_router_config(
                port, backend_port, loggers, sink.path)))
            routers[name] = (Process(name, [
                str(envoy_binary()), "-c", str(tmp / f"{name}.json"), "--concurrency", "1",
                "--disable-hot-restart", "-l", "error"], tmp / f"{name}.log").start(), port)
        for name, (router, port) in routers.items():
            wait_until(lambda p=port: http(f"http://127.0.0.1:{p}/").status == 200, 30,
                       what=f"the router logging to {name}")
            assert router.popen is not None
            pin(router.popen.pid, "1")
        for _ in range(rounds):
            for name, (router, port) in routers.items():
                assert router.popen is not None
                wrk(f"http://127.0.0.1:{port}/", 1)  # warm up
                before = cpu_seconds([router.popen.pid])
                run = wrk(f"http://127.0.0.1:{port}/", seconds)
                run["envoy_us_per_request"] = round(
                    (cpu_seconds([router.popen.pid]) - before) / run["requests"] * 1e6, 1)
                runs[name].append(run)
    finally:
        for router, _ in routers.values():
            router.stop()
        backend.stop()
        os.sched_setaffinity(0, affinity)
    median = {name: statistics.median(r["envoy_us_per_request"] for r in each)
              for name, each in runs.items()}
    return {"rounds": runs, "envoy_us_per_request_median": median,
            "added_over_none_us": {name: round(value - median["none"], 1)
                                   for name, value in median.items()},
            "sink_messages": sink.messages, "seconds_per_run": seconds,
            "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()}}


def test_envoy_loggers_small(tmp_path: Path) -> None:
    result = measure_loggers(tmp_path, seconds=1, rounds=1)
    assert set(result["envoy_us_per_request_median"]) == {
        *LOGGERS, "dynamic_module", "dynamic_module_abi_counter"}
    assert result["sink_messages"] > 0


@pytest.mark.benchmark
def test_envoy_loggers_benchmark(tmp_path: Path) -> None:
    result = measure_loggers(tmp_path, seconds=5, rounds=4)
    out = ROOT / "results" / "envoy_loggers.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def test_envoy_telemetry_small(tmp_path: Path) -> None:
    result = measure(tmp_path, seconds=1, rounds=1)
    assert result["envoy_over_minimal_rps"] > 0
    # Warm-ups and measured runs alike: every request is in Istio's metrics.
    assert result["istio_requests_total"] >= result["requests_measured"] > 0


@pytest.mark.benchmark
def test_envoy_telemetry_benchmark(tmp_path: Path) -> None:
    result = measure(tmp_path, seconds=10, rounds=3)
    out = ROOT / "results" / "envoy_telemetry.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


@pytest.mark.benchmark
def test_module_cost_benchmark(tmp_path: Path) -> None:
    """The metrics module's own work a request, Envoy played by stubs (``module_cost.c``):
    what of the logger's cost in Envoy is the module's (best of 5 runs of 10M requests)."""
    harness = tmp_path / "module_cost"
    subprocess.run([stats_module.compiler(), "-O2", "-pthread", "-o", str(harness),
                    str(Path(__file__).with_name("module_cost.c")),
                    str(ROOT / "plugins" / "envoy" / stats_module.SOURCE)], check=True)
    runs = [float(subprocess.run([str(harness), str(tmp_path / f"table-{i}")], check=True,
                                 capture_output=True, text=True).stdout) for i in range(5)]
    result = {"ns_per_request_runs": runs, "ns_per_request_best": min(runs),
              "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()}}
    out = ROOT / "results" / "module_cost.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
