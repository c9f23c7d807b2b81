"""A distribution adds a profile and a generator for a proxy kind of its own, end to end.

Discovery loads the test distribution's profile (``profile: [sidecar, echo]``); a real
Envoy whose node metadata says ``GENERATOR: echo`` gets the distribution's listener, while
a gateway on the same discovery keeps getting Istio's config unchanged.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pilotfish.plugins.envoy.backend import envoy_binary
from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.plugins import write_distribution
from pilotfish.testing.processes import free_port, http, pilotfish, wait_until

pytestmark = pytest.mark.envoy
envoy_binary()

ECHO_KIND = '''
import os

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from google.protobuf import any_pb2

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.plugins import Profile
from pilotfish.core.xds import types

PROFILE = Profile(description="echo proxies: one listener that says how many services there are",
                  plugins={"xds": ("echo-lds",)})


def pack(message):
    out = any_pb2.Any()
    out.Pack(message)
    return out


class EchoListeners:
    type_url = types.LISTENER
    proxy_kinds = frozenset({"echo"})
    depends_on = frozenset({"Service"})

    def generate(self, push, proxy, memo):
        body = f"echo kind: {len(push.services)} services for {proxy.name}"
        route = route_pb2.RouteConfiguration(name="echo", virtual_hosts=[
            route_components_pb2.VirtualHost(name="echo", domains=["*"], routes=[
                route_components_pb2.Route(
                    match=route_components_pb2.RouteMatch(prefix="/"),
                    direct_response=route_components_pb2.DirectResponseAction(
                        status=200, body={"inline_string": body}))])])
        router = hcm.HttpFilter(name="envoy.filters.http.router",
                                typed_config=pack(router_pb2.Router()))
        manager = hcm.HttpConnectionManager(stat_prefix="echo", route_config=route,
                                            http_filters=[router])
        return [listener_pb2.Listener(
            name="echo",
            address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
                address="127.0.0.1", port_value=int(os.environ["ECHO_PORT"]))),
            filter_chains=[listener_components_pb2.FilterChain(filters=[
                listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager",
                                               typed_config=pack(manager))])])]


@hookimpl
def pilotfish_xds_generator():
    return EchoListeners()
'''

APP, APP_PORT = "127.0.22.3", 18080

CONFIG = f"""\
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: {APP_PORT}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web-1, namespace: default, labels: {{app: web}}}}
status: {{podIP: {APP}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: GATEWAY_PORT, name: http, protocol: HTTP}}
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
"""


def test_a_proxy_of_a_plugins_own_kind_gets_its_generator_and_routers_are_unchanged(
        mesh: LocalMesh, tmp_path: Path):
    plugin = write_distribution(tmp_path / "plugins", "pilotfish-test-echo-kind",
                                {"echo_kind": ECHO_KIND},
                                {"pilotfish.profiles": {"echo": "echo_kind:PROFILE"},
                                 "pilotfish.xds": {"echo-lds": "echo_kind"}})
    gateway_port, echo_port = free_port(), free_port()
    mesh.write("web.yaml", CONFIG.replace("GATEWAY_PORT", str(gateway_port)))
    mesh.start_apps([f"web:v1@{APP}:{APP_PORT}"])
    mesh.start_discovery("profile: [sidecar, echo]\n",
                         extra_env={"PYTHONPATH": str(plugin), "ECHO_PORT": str(echo_port)})

    mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"})
    mesh.start_proxy("echo-1", "default", extra=["--meta", "GENERATOR=echo"])

    reply = wait_until(lambda: (r := http(f"http://127.0.0.1:{echo_port}/", timeout=1)
                                ).status == 200 and r, 15, what="the echo listener")
    assert reply.body == b"echo kind: 1 services for echo-1"
    # The gateway on the same discovery still gets Istio's listeners and routes.
    routed = wait_until(lambda: (r := http(f"http://127.0.0.1:{gateway_port}/", timeout=1)
                                 ).status == 200 and r, 15, what="the gateway route")
    assert routed.json()["service"] == "web"

    kinds = {item["proxy"]: item["proxy_type"] for item in mesh.syncz()}
    assert kinds == {"gw-1.default": "router", "echo-1.default": "echo"}
    status = subprocess.run(pilotfish("proxy-status", "--discovery-address",
                                      f"127.0.0.1:{mesh.debug_port}"),
                            capture_output=True, text=True, check=True).stdout
    assert any(line.split()[:2] == ["echo-1.default", "echo"] for line in status.splitlines())
    listed = subprocess.run(pilotfish("plugins", "--mesh-config",
                                      str(mesh.workdir / "pilotfish.yaml")),
                            capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(plugin)}).stdout
    rows = [line.split() for line in listed.splitlines()]
    assert ["echo", "yes", "pilotfish-test-echo-kind", "0.0.1"] in [r[:4] for r in rows]
    assert ["xds", "echo-lds", "pilotfish-test-echo-kind", "0.0.1", "echo_kind"] in rows
