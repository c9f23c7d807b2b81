"""The agent's status server with a real Envoy and discovery: readiness, `agent wait`,
merged metrics, /quitquitquit and /drain, and a discovery outage.

Routers are used throughout: a sidecar's capture listeners sit on Istio's fixed ports
(15001, 15006), which other suites on this host may hold; everything here uses free ports.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotfish.core import prometheus
from pilotfish.plugins.envoy.backend import METRICS_ENV, envoy_binary
from pilotfish.plugins.envoy.stats_table import TABLE_FILE
from pilotfish.testing.mesh import LocalMesh, Proxy
from pilotfish.testing.plugins import write_distribution
from pilotfish.testing.processes import Process, free_port, http, pilotfish, wait_until

pytestmark = pytest.mark.envoy

# Envoy is part of the dev install (./dev): a missing binary fails loudly, never skips.
envoy_binary()

APP = "127.0.20.7"
APP_PORT = 18081
WEB = "outbound|80||web.default.svc.cluster.local"
PROXY_UID = 1337

CONFIG = """\
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: {app_port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web-1, namespace: default, labels: {{app: web}}}}
status: {{podIP: {app}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {http_port}, name: http, protocol: HTTP}}
    hosts: ["*"]
  - port: {{number: {tcp_port}, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [edge]
  http:
  - route: [{{destination: {{host: web, port: {{number: 80}}}}}}]
    {headers}
  tcp:
  - match: [{{port: {tcp_port}}}]
    route: [{{destination: {{host: web, port: {{number: 80}}}}}}]
"""

# A discovery plugin that adds a cluster Envoy refuses (LOGICAL_DNS takes one endpoint)
# while a Service labelled pilotfish.test/break-clusters exists.
BREAK_CLUSTERS = '''
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec
from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.xds import types


def endpoint(port):
    return ec.LbEndpoint(endpoint=ec.Endpoint(address={
        "socket_address": {"address": "127.0.0.1", "port_value": port}}))


@hookimpl
def pilotfish_patch_resources(type_url, scope, push, resources):
    if type_url != types.CLUSTER or not any(
            s.labels.get("pilotfish.test/break-clusters") for s in push.services.values()):
        return
    broken = cluster_pb2.Cluster(name="broken-by-test", type=cluster_pb2.Cluster.LOGICAL_DNS)
    broken.connect_timeout.seconds = 1
    broken.load_assignment.cluster_name = broken.name
    broken.load_assignment.endpoints.add(lb_endpoints=[endpoint(1), endpoint(2)])
    resources.append(broken)
'''
TRIGGER = """\
apiVersion: v1
kind: Service
metadata: {name: breaker, namespace: default, labels: {pilotfish.test/break-clusters: "on"}}
spec:
  ports: [{name: http, port: 80}]
"""


class Edge:
    """The gateway scenario: config, discovery, the app, and the gateway's ports."""

    def __init__(self, mesh: LocalMesh) -> None:
        self.mesh = mesh
        self.http_port, self.tcp_port = free_port(), free_port()
        self.write()

    def write(self, headers: str = "") -> None:
        self.mesh.write("edge.yaml", CONFIG.format(
            app=APP, app_port=APP_PORT, http_port=self.http_port, tcp_port=self.tcp_port,
            headers=headers))

    def start(self) -> None:
        self.mesh.start_discovery()
        self.mesh.start_apps([f"web:v1@{APP}:{APP_PORT}"])

    def get(self, path: str = "/hello") -> int:
        return http(f"http://127.0.0.1:{self.http_port}{path}", timeout=2).status

    def wait_routed(self) -> None:
        wait_until(lambda: self.get() == 200, 20, what="HTTP through the gateway")


@pytest.fixture
def proxy_dir() -> Iterator[Path]:
    """A config dir the proxy user can reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="pilotfish-proxy-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)



def start_agent(mesh: LocalMesh, name: str, *extra: str, config_dir: Path | None = None,
                as_proxy_user: bool = False) -> Proxy:
    """An agent that is not waited for (LocalMesh.start_proxy waits for LIVE)."""
    admin, status, health = free_port(), free_port(), free_port()
    config_dir = config_dir or mesh.workdir / f"agent-{name}"
    argv = pilotfish(
        "agent", "--type", "router", "--name", name, "--namespace", "default",
        "--ip", "127.0.0.1", "--labels", "istio=ingressgateway,app=edge,version=v3",
        "--discovery", f"127.0.0.1:{mesh.xds_port}", "--admin-port", str(admin),
        "--status-port", str(status), "--health-port", str(health),
        "--config-dir", str(config_dir), "--termination-drain-duration", "1s", *extra)
    if as_proxy_user and os.geteuid() == 0:
        # The node runs the agent as Istio's proxy user inside the pod: nothing may need root.
        config_dir.mkdir(parents=True, exist_ok=True)
        os.chown(config_dir, PROXY_UID, PROXY_UID)
        argv = ["setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}", "--clear-groups",
                *argv]
    process = Process(f"agent-{name}", argv, mesh.workdir / f"agent-{name}.log").start()
    mesh.processes.append(process)
    return Proxy(name, "default", admin, process, status, health)


def readiness(proxy: Proxy, port: int | None = None) -> tuple[int, str]:
    proxy.process.check_running()
    result = http(f"http://127.0.0.1:{port or proxy.health_port}/healthz/ready", timeout=5)
    return result.status, result.body.decode().strip()


def agent_wait(proxy: Proxy, timeout: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        pilotfish("agent", "wait", "--health-port", str(proxy.health_port), "--timeout", timeout,
                  "--period", "200ms"),
        capture_output=True, text=True, timeout=120, check=False)


def raw_status(port: int, method: str, path: str) -> int:
    """The status of one request sent as written (no client-side path clean-up)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("content-length", "0")
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def scrape(proxy: Proxy, path: str = "/stats/prometheus") -> dict[str, prometheus.Family]:
    result = http(f"{proxy.status}{path}", timeout=10)
    assert result.status == 200
    assert result.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = prometheus.parse(result.body.decode(), path)
    types = [f.name for f in families]
    assert len(types) == len(set(types)), "a family appears twice"
    return {f.name: f for f in families}


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_ready_only_after_config_from_discovery_and_agent_wait(mesh: LocalMesh,
                                                              proxy_dir: Path) -> None:
    edge = Edge(mesh)
    proxy = start_agent(mesh, "gw-1", config_dir=proxy_dir, as_proxy_user=True)
    # First the proxy's admin API is not up yet, then Envoy waits for discovery.
    status, reason = wait_until(lambda: (r := readiness(proxy))[1].startswith("config") and r,
                                30, what="the proxy to wait for discovery")
    assert status == 503
    assert reason == (f"config not received: not connected to discovery at "
                      f"127.0.0.1:{mesh.xds_port} (is it running?)")
    assert readiness(proxy, proxy.status_port)[0] == 503  # the status port answers too

    failed = agent_wait(proxy, "1s")
    assert failed.returncode == 1
    assert "the proxy was not ready within 1s" in failed.stderr
    assert "HTTP 503: config not received: not connected to discovery" in failed.stderr

    waiter = subprocess.Popen(
        pilotfish("agent", "wait", "--health-port", str(proxy.health_port), "--timeout", "90s"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        assert waiter.poll() is None  # still waiting: nothing is ready yet
        edge.start()
        assert waiter.wait(90) == 0, waiter.communicate()
        assert "the proxy is ready" in waiter.communicate()[0]
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert readiness(proxy) == (200, "ready")
    assert readiness(proxy, proxy.status_port) == (200, "ready")
    edge.wait_routed()

    if os.geteuid() == 0:  # proxy user: the agent, Envoy and the files they wrote
        [envoy] = children(proxy.process.popen.pid)  # type: ignore[union-attr]
        uid_line = next(line for line in Path(f"/proc/{envoy}/status").read_text().splitlines()
                        if line.startswith("Uid:"))
        assert uid_line.split()[1] == str(PROXY_UID)
        bootstrap = proxy_dir / "envoy-rev.json"
        assert bootstrap.stat().st_uid == PROXY_UID


def test_a_rejected_first_config_keeps_the_proxy_unready(mesh: LocalMesh,
                                                        tmp_path: Path) -> None:
    plugins = write_distribution(tmp_path / "plugins", "pilotfish-test-break-clusters",
                                 {"break_clusters": BREAK_CLUSTERS},
                                 {"pilotfish.xds": {"break-clusters": "break_clusters"}})
    Edge(mesh)
    mesh.write("trigger.yaml", TRIGGER)
    mesh.start_discovery("plugins: {xds: {add: [break-clusters]}}\n",
                         extra_env={"PYTHONPATH": str(plugins)})
    proxy = start_agent(mesh, "gw-1")
    # Envoy goes LIVE on a rejected first CDS: its own /ready cannot be the readiness.
    wait_until(lambda: http(f"{proxy.admin}/ready", timeout=1).body.strip() == b"LIVE", 30,
               what="Envoy to go LIVE")
    status, reason = readiness(proxy)
    assert status == 503
    assert reason.startswith(f"config received from discovery at 127.0.0.1:{mesh.xds_port}, "
                             "but the proxy rejected it (CDS, ")
    assert reason.endswith("pilotfish proxy-status shows why")

    mesh.remove("trigger.yaml")  # the next CDS push is accepted
    wait_until(lambda: readiness(proxy) == (200, "ready"), 30, what="readiness after the fix")


# Istio's metrics counted inside Envoy by the agent's module, and sent over gRPC access
# logs: the same families either way (docs/agent.md).
@pytest.mark.parametrize("path", ["module", "als"])
def test_merged_metrics_carry_envoy_istio_and_app_metrics(mesh: LocalMesh, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          path: str) -> None:
    monkeypatch.setenv(METRICS_ENV, path)  # the agent started below inherits it
    edge = Edge(mesh)
    edge.start()
    app_dir = tmp_path / "app-metrics"
    app_dir.mkdir()
    (app_dir / "metrics").write_text(
        "# HELP shop_orders_total Orders taken.\n# TYPE shop_orders_total counter\n"
        'shop_orders_total{kind="book"} 7\n'
        "# TYPE envoy_cluster_upstream_rq counter\nenvoy_cluster_upstream_rq 99\n")
    app_port, stats_port = free_port(), free_port()
    server = Process("app-metrics", [sys.executable, "-m", "http.server", str(app_port),
                                     "--bind", "127.0.0.1", "--directory", str(app_dir)],
                     tmp_path / "app-metrics.log").start()
    mesh.processes.append(server)
    app_url = f"http://127.0.0.1:{app_port}/metrics"
    wait_until(lambda: http(app_url, timeout=1).status == 200, 15, what="the app's metrics")

    gateway = mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway",
                                                         "app": "edge"},
                               extra=["--app-metrics", app_url,
                                      "--prometheus-port", str(stats_port)])
    mesh.wait_synced("gw-1.default")
    edge.wait_routed()
    assert (mesh.workdir / "proxy-gw-1" / TABLE_FILE).exists() == (path == "module")
    for _ in range(2):
        assert edge.get() == 200
    for _ in range(2):
        assert edge.get("/status/404") == 404
    for _ in range(2):
        assert http(f"http://127.0.0.1:{edge.tcp_port}/raw", timeout=2).status == 200

    # Access-log entries reach the agent in batches (1 s): wait for the duration series.
    metrics = wait_until(
        lambda: (m := scrape(gateway)).get("istio_request_duration_milliseconds") and m, 30,
        what="request durations in the merged scrape")

    # Envoy's own stats, with Istio's tag names: the whole cluster name, the code apart.
    ok = [s for s in metrics["envoy_cluster_upstream_rq"].samples
          if s.label("cluster_name") == WEB and s.label("response_code") == "200"]
    assert [s.value for s in ok] == ["3"]

    requests = metrics["istio_requests_total"]
    by_code = {s.label("response_code"): s for s in requests.samples}
    assert set(by_code) == {"200", "404"}
    assert (by_code["200"].value, by_code["404"].value) == ("3", "2")
    labels = dict(by_code["200"].labels)
    assert {k: labels[k] for k in (
        "reporter", "source_workload", "source_workload_namespace", "source_app",
        "destination_service", "destination_service_name", "destination_service_namespace",
        "destination_workload", "request_protocol", "connection_security_policy",
    )} == {
        "reporter": "source", "source_workload": "gw-1", "source_workload_namespace": "default",
        "source_app": "edge", "destination_service": "web.default.svc.cluster.local",
        "destination_service_name": "web", "destination_service_namespace": "default",
        "destination_workload": "unknown", "request_protocol": "http",
        "connection_security_policy": "unknown",
    }
    # Split by response code, as Istio's histogram is.
    count = {s.label("response_code"): s.value
             for s in metrics["istio_request_duration_milliseconds"].samples
             if s.name.endswith("_count")}
    assert count == {"200": "3", "404": "2"}

    tcp = {name: metrics[name].samples[0] for name in (
        "istio_tcp_connections_opened_total", "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total")}
    assert tcp["istio_tcp_connections_opened_total"].value == "2"
    assert tcp["istio_tcp_connections_opened_total"].label("request_protocol") == "tcp"
    assert float(tcp["istio_tcp_sent_bytes_total"].value) > 0
    assert float(tcp["istio_tcp_received_bytes_total"].value) > 0
    closed = wait_until(lambda: scrape(gateway)["istio_tcp_connections_closed_total"], 10)
    assert float(closed.samples[0].value) <= 2

    # The app's own family is merged; its clash with Envoy's name is dropped, not doubled.
    assert metrics["shop_orders_total"].samples[0].value == "7"
    raw = http(f"{gateway.status}/metrics").body.decode()
    assert "envoy_cluster_upstream_rq 99" not in raw
    assert f"# pilotfish: {app_url}: family envoy_cluster_upstream_rq dropped" in raw

    # Istio's 15090: Envoy's own stats, and nothing else of the admin API.
    assert b"envoy_server_live" in http(f"http://127.0.0.1:{stats_port}/stats/prometheus").body
    assert http(f"http://127.0.0.1:{stats_port}/config_dump").status == 404
    # ... not through a path the admin API would normalize, nor another method
    for method, path in (("GET", "/stats/prometheus/../../config_dump"),
                         ("GET", "/stats/prometheus/%2e%2e/config_dump"),
                         ("GET", "//stats/prometheus/../../config_dump"),
                         ("GET", "/stats/prometheus/"),
                         ("POST", "/stats/prometheus/../../quitquitquit"),
                         ("POST", "/stats/prometheus")):
        status = raw_status(stats_port, method, path)
        assert status in (400, 404), (method, path, status)
    assert http(f"{gateway.admin}/ready").status == 200  # no quitquitquit got through


def test_config_dump_through_the_proxy_backend_on_the_status_port(mesh: LocalMesh) -> None:
    edge = Edge(mesh)
    edge.start()
    gateway = mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"})
    mesh.wait_synced("gw-1.default")
    dump = http(f"{gateway.status}/config_dump").json()
    kinds = {config["@type"].rsplit(".", 1)[-1] for config in dump["configs"]}
    assert {"ClustersConfigDump", "ListenersConfigDump"} <= kinds
    assert http(f"{gateway.status}/config_dump", method="POST", data=b"").status == 405


def test_quitquitquit_drains_then_stops_agent_and_envoy(mesh: LocalMesh) -> None:
    edge = Edge(mesh)
    edge.start()
    gateway = mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"})
    [envoy] = children(gateway.process.popen.pid)  # type: ignore[union-attr]

    assert http(f"{gateway.status}/quitquitquit").status == 405  # controls are POST only
    assert gateway.process.running
    result = http(f"{gateway.status}/quitquitquit", method="POST", data=b"")
    assert (result.status, result.body) == (200, b"OK\n")
    assert gateway.process.popen.wait(30) == 0  # type: ignore[union-attr]
    assert not alive(envoy)
    log = gateway.process.log(200)
    assert "/quitquitquit from" in log
    assert "draining envoy" in log
    assert "could not drain" not in log


def test_drain_turns_readiness_off_and_keeps_serving(mesh: LocalMesh) -> None:
    edge = Edge(mesh)
    edge.start()
    gateway = mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"})
    mesh.wait_synced("gw-1.default")
    edge.wait_routed()
    assert readiness(gateway) == (200, "ready")

    result = http(f"{gateway.status}/drain", method="POST", data=b"")
    assert (result.status, result.body) == (200, b"OK\n")
    assert readiness(gateway) == (503, "the proxy is draining")
    assert gateway.process.running
    assert edge.get() == 200  # a graceful drain: requests still served meanwhile

    gateway.process.signal(signal.SIGTERM)
    assert gateway.process.popen.wait(30) == 0  # type: ignore[union-attr]
    assert "could not drain" not in gateway.process.log(200)


def test_discovery_outage_keeps_traffic_and_readiness_then_resyncs(mesh: LocalMesh) -> None:
    edge = Edge(mesh)
    edge.start()
    gateway = mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"})
    mesh.wait_synced("gw-1.default")
    edge.wait_routed()
    assert readiness(gateway) == (200, "ready")

    [discovery] = [p for p in mesh.processes if p.name == "discovery"]
    discovery.stop()
    mesh.processes.remove(discovery)
    wait_until(lambda: gateway.stat("control_plane.connected_state") == 0, 15,
               what="Envoy to notice discovery is gone")
    # Envoy serves on its last configuration; an initialized proxy stays ready.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert edge.get() == 200
        assert readiness(gateway) == (200, "ready")
        time.sleep(0.25)

    # Same ports again: Envoy reconnects with its backoff (≤ 30 s) and resyncs.
    mesh.start_discovery()
    mesh.wait_synced("gw-1.default", timeout=60)
    assert gateway.stat("control_plane.connected_state") == 1

    # A change made after the outage reaches the proxy.
    edge.write(headers="headers: {response: {set: {x-config: after-outage}}}")

    def changed() -> bool:
        result = http(f"http://127.0.0.1:{edge.http_port}/hello", timeout=2)
        return result.headers.get("x-config") == "after-outage"

    wait_until(changed, 30, what="the new route config through the gateway")
    assert readiness(gateway) == (200, "ready")
