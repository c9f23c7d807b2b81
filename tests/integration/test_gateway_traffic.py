"""Traffic through a real Envoy gateway configured by discovery: HTTP and TCP servers.

Discovery, the demo app and a router proxy run as real processes; the listeners the gateway
serves on come from the LDS translator, their routes and clusters from RDS, CDS and EDS.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotfish.plugins.envoy.backend import envoy_binary
from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import free_port, http, wait_until

pytestmark = pytest.mark.envoy

# Envoy is part of the dev install (./dev): a missing binary fails loudly, never skips.
envoy_binary()

APP = "127.0.20.3"
APP_PORT = 18080

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
  tcp:
  - match: [{{port: {tcp_port}}}]
    route: [{{destination: {{host: web, port: {{number: 80}}}}}}]
"""


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    local = LocalMesh(tmp_path)
    try:
        yield local
    finally:
        local.stop()


def test_gateway_serves_http_and_tcp_servers(mesh: LocalMesh) -> None:
    http_port, tcp_port = free_port(), free_port()
    mesh.write("mesh.yaml", CONFIG.format(app=APP, app_port=APP_PORT, http_port=http_port,
                                          tcp_port=tcp_port))
    mesh.start_discovery()
    mesh.start_apps([f"web:v1@{APP}:{APP_PORT}"])
    gateway = mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"})
    mesh.wait_synced("gw-1.default")

    # HTTP: the listener's HCM asks RDS for http.<port>, which routes to the app.
    answer = wait_until(
        lambda: (r := http(f"http://127.0.0.1:{http_port}/hello", timeout=2)).status == 200
        and r, 15, what="HTTP through the gateway")
    assert answer.json()["service"] == "web"

    # TCP: the same bytes through a tcp_proxy chain built from the VirtualService tcp route.
    answer = wait_until(
        lambda: (r := http(f"http://127.0.0.1:{tcp_port}/raw", timeout=2)).status == 200
        and r, 15, what="TCP through the gateway")
    assert answer.json()["path"] == "/raw"

    # Both connections were logged to the proxy's stdout by the access loggers.
    log = gateway.process.log(200)
    assert "outbound|80||web.default.svc.cluster.local" in log
