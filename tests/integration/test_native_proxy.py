"""The native proxy as a gateway, against real discovery and real backends: what only it
needs proving (the scenarios both proxies share are parametrized where they live, e.g.
test_gateway_traffic.py). A long-lived stream survives config pushes; a resource outside
the supported subset is NACKed with its field while the last good config keeps serving.
Both run over either ADS flavour (``--xds-mode``: delta, or state of the world)."""

from __future__ import annotations

import socket
import sys

import pytest
import wsproto
import wsproto.events

from pilotfish.core.native import compiled
from pilotfish.testing.config import backend, documents, ingress_gateway
from pilotfish.testing.mesh import LocalMesh, Proxy
from pilotfish.testing.processes import Process, free_port, http, wait_until

ECHO = "127.0.21.3"
ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [edge]
  http:
  - headers: {{response: {{set: {{x-push: "{push}"}}}}}}
    route: [{{destination: {{host: echo, port: {{number: 80}}}}}}]
"""


def start_echo(mesh: LocalMesh, port: int) -> Process:
    """echo-basic on ``ECHO:port``, stopped with the mesh."""
    process = Process("echo", [sys.executable, "-m", "pilotfish.demo.echo_basic"],
                      mesh.workdir / "echo.log")
    mesh.processes.append(process)
    process.start({"HTTP_PORT": str(port), "H2C_PORT": str(free_port()),
                   "POD_NAME": "echo-1", "NAMESPACE": "default"})

    def listening() -> bool:
        process.check_running()
        with socket.socket() as probe:
            return probe.connect_ex((ECHO, port)) == 0
    wait_until(listening, 15, what="echo-basic")
    return process


def native_gateway(mesh: LocalMesh, app: str = "", xds_mode: str = "delta"
                   ) -> tuple[int, Proxy]:
    """Discovery, echo-basic and a native gateway routing to it: (its port, the proxy)."""
    port, echo_port = free_port(), free_port()
    mesh.write("mesh.yaml", documents(backend("echo", ECHO, echo_port), ingress_gateway(port)))
    mesh.write("route.yaml", ROUTE.format(push=0))
    mesh.start_discovery()
    start_echo(mesh, echo_port)
    labels = {"istio": "ingressgateway", **({"app": app} if app else {})}
    gateway = mesh.start_proxy("gw-1", "default", labels=labels, xds_mode=xds_mode,
                               extra=["--proxy", "native"])
    wait_until(lambda: http(f"http://127.0.0.1:{port}/", timeout=2).status == 200, 15,
               what="HTTP through the native gateway")
    streams = [c["mode"] for c in http(f"{mesh.debug}/debug/adsz").json()
               if "gw-1" in c["proxy"]]
    assert streams == [xds_mode], streams  # discovery serves the flavour asked for
    return port, gateway


class WebSocket:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(wsproto.events.Request(host="echo", target="/ws")))
        assert isinstance(self._event(), wsproto.events.AcceptConnection)

    def _event(self) -> wsproto.events.Event:
        while True:
            for event in self.ws.events():
                return event
            data = self.sock.recv(65536)
            assert data, "the proxy closed the stream"
            self.ws.receive_data(data)

    def echo(self, text: str) -> str:
        self.sock.sendall(self.ws.send(wsproto.events.TextMessage(data=text)))
        event = self._event()
        assert isinstance(event, wsproto.events.TextMessage)
        return str(event.data)


@pytest.mark.parametrize("xds_mode", ["delta", "sotw"])
def test_a_websocket_survives_twenty_config_pushes(mesh: LocalMesh, xds_mode: str):
    port, _ = native_gateway(mesh, xds_mode=xds_mode)
    stream = WebSocket(port)
    assert stream.echo("before") == "before"
    for push in range(1, 21):
        mesh.write("route.yaml", ROUTE.format(push=push))
        # and an unrelated Service each time
        mesh.write(f"other-{push}.yaml", backend(f"other-{push}", ECHO, 80).split("---")[0])
        wait_until(lambda p=push: http(f"http://127.0.0.1:{port}/", timeout=2).headers.get(
            "x-push") == str(p), 15, what=f"push {push} to be served")
        assert stream.echo(f"after push {push}") == f"after push {push}"


@pytest.mark.parametrize("xds_mode", ["delta", "sotw"])
def test_an_unsupported_field_is_nacked_and_the_last_good_config_serves(mesh: LocalMesh,
                                                                       xds_mode: str):
    port, _ = native_gateway(mesh, xds_mode=xds_mode)
    # a cluster's per-connection buffer limit is outside the native proxy's subset
    # (docs/native.md); an EnvoyFilter sets it on every cluster
    mesh.write("ef.yaml", """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: buffers, namespace: default}
spec:
  configPatches:
  - applyTo: CLUSTER
    patch:
      operation: MERGE
      value: {per_connection_buffer_limit_bytes: 32768}
""")

    def nacked() -> str | None:
        for item in mesh.syncz():
            entry = (item.get("resources") or {}).get(
                "type.googleapis.com/envoy.config.cluster.v3.Cluster") or {}
            if entry.get("nacks"):
                return str(entry.get("lastError"))
        return None
    error = wait_until(nacked, 15, what="discovery to see CDS NACKed")
    assert "per_connection_buffer_limit_bytes" in error and \
        "not supported by the native proxy" in error
    assert http(f"http://127.0.0.1:{port}/", timeout=2).status == 200


def test_istios_metrics_are_counted_by_the_proxy_and_merged_by_the_agent(mesh: LocalMesh):
    port, gateway = native_gateway(mesh, app="edge")
    for _ in range(3):
        assert http(f"http://127.0.0.1:{port}/status/503", timeout=2).status == 503
    text = http(f"http://127.0.0.1:{gateway.status_port}/stats/prometheus").body.decode()
    lines = [line for line in text.splitlines()
             if line.startswith("istio_requests_total{") and 'response_code="503"' in line]
    assert len(lines) == 1, text
    assert lines[0].endswith(" 3")
    for label in ('reporter="source"', 'source_workload="gw-1"', 'source_app="edge"',
                  'destination_service="echo.default.svc.cluster.local"',
                  'destination_service_name="echo"', 'request_protocol="http"'):
        assert label in lines[0], lines[0]
    assert "istio_request_duration_milliseconds_bucket{" in text
    assert "envoy_cluster_upstream_rq_total{" in text


def test_server_info_says_whether_the_hot_path_runs_compiled(mesh: LocalMesh):
    """The benchmarks record which build served: ``/server_info``'s ``hot_path`` says
    whether the request path runs compiled (mypyc), as the checkout's build is, and why."""
    _, gateway = native_gateway(mesh)
    hot_path = http(f"{gateway.admin}/server_info").json()["hot_path"]
    build = compiled.check()
    assert hot_path == {"compiled": build.compiled, "build": build.reason,
                        "modules": dict.fromkeys(compiled.MODULES, build.compiled)}


def test_concurrency_spreads_connections_over_processes_sharing_one_config(mesh: LocalMesh):
    """``--concurrency 3``: three processes listen on the same port (SO_REUSEPORT), fed by
    one ADS stream; a push reaches all of them, the admin API adds their counters up."""
    port, echo_port = free_port(), free_port()
    mesh.write("mesh.yaml", documents(backend("echo", ECHO, echo_port), ingress_gateway(port)))
    mesh.write("route.yaml", ROUTE.format(push=0))
    mesh.start_discovery()
    start_echo(mesh, echo_port)
    gateway = mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"},
                               extra=["--proxy", "native", "--concurrency", "3"])
    wait_until(lambda: http(f"http://127.0.0.1:{port}/", timeout=2).status == 200, 15,
               what="HTTP through the native gateway")
    assert http(f"{gateway.admin}/server_info").json()["command_line_options"][
        "concurrency"] == 3
    mesh.write("route.yaml", ROUTE.format(push=1))

    def pushed_everywhere() -> bool:  # every new connection may land on any process
        return all(http(f"http://127.0.0.1:{port}/", timeout=2).headers.get("x-push") == "1"
                   for _ in range(30))
    wait_until(pushed_everywhere, 15, what="the push to reach every process")
    for _ in range(60):
        assert http(f"http://127.0.0.1:{port}/", timeout=2).status == 200
    stats = dict(line.split(": ", 1) for line in
                 http(f"{gateway.admin}/stats").body.decode().splitlines() if ": " in line)
    per_worker = {k: int(v) for k, v in stats.items()
                  if ".worker_" in k and k.endswith(".downstream_cx_total")}
    assert len([v for v in per_worker.values() if v]) >= 2, per_worker  # spread
    total = [int(v) for k, v in stats.items() if k.startswith(f"listener.0.0.0.0_{port}.")
             and k.endswith(".downstream_cx_total") and ".worker_" not in k]
    assert total == [sum(per_worker.values())]  # the admin API adds every process up
    text = http(f"http://127.0.0.1:{gateway.status_port}/stats/prometheus").body.decode()
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("istio_requests_total{"))
    assert counted >= 60 + 30
