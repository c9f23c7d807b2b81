"""Gateway API objects served by a real Envoy router, as Istio serves them.

A Gateway of class ``istio`` and its HTTPRoutes are converted into Istio config; the router
that serves the Gateway is any proxy labelled ``gateway.networking.k8s.io/gateway-name``
in the Gateway's namespace (``pilotfish agent --type router --labels ...``), binding each
listener's port. Route precedence, segment-wise path prefixes, filters, the 500 of a
missing backend, and the status conditions are checked through it.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from pilotfish.plugins.envoy.backend import envoy_binary
from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import free_port, http, pilotfish, wait_until

pytestmark = pytest.mark.envoy

envoy_binary()  # part of the dev install: a missing binary fails loudly, never skips

APP = "127.0.21.3"

CONFIG = """\
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: {app_port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web-1, namespace: shop, labels: {{app: web}}}}
status: {{podIP: {app}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: shop}}
spec:
  gatewayClassName: istio
  listeners:
  - {{name: http, port: {port}, protocol: HTTP}}
  - {{name: admin, port: {port}, protocol: HTTP, hostname: admin.example.com}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: shop}}
spec:
  parentRefs: [{{name: edge, sectionName: http}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    filters:
    - type: URLRewrite
      urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /}}}}
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: x-route, value: api}}]}}
    backendRefs: [{{name: web, port: 80}}]
  - matches: [{{path: {{type: Exact, value: /old}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{path: {{type: ReplaceFullPath, replaceFullPath: /new}}, statusCode: 301}}
  - matches: [{{path: {{type: PathPrefix, value: /gone}}}}]
    backendRefs: [{{name: missing, port: 80}}]
  - backendRefs: [{{name: web, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: admin, namespace: shop}}
spec:
  parentRefs: [{{name: edge, sectionName: admin}}]
  hostnames: [admin.example.com, elsewhere.org]
  rules:
  - matches: [{{path: {{type: Exact, value: /api/exact}}}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {{add: [{{name: x-admin, value: "yes"}}]}}
    backendRefs: [{{name: web, port: 80}}]
"""



def status_of(mesh: LocalMesh, kind: str, name: str) -> dict[str, Any]:
    for item in http(f"{mesh.debug}/debug/gateway_status").json():
        if item["kind"] == kind and item["name"] == name:
            return dict(item["status"])
    raise AssertionError(f"no status for {kind} {name}")


def conditions(entry: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in entry["conditions"]}


def test_gateway_api_routes_through_a_real_router(mesh: LocalMesh) -> None:
    port, app_port = free_port(), free_port(APP)
    mesh.write("shop.yaml", CONFIG.format(app=APP, app_port=app_port, port=port))
    mesh.start_discovery()
    mesh.start_apps([f"web:v1@{APP}:{app_port}"])
    mesh.start_proxy("edge-0", "shop", labels={
        "gateway.networking.k8s.io/gateway-name": "edge"})
    mesh.wait_synced("edge-0.shop")
    base = f"http://127.0.0.1:{port}"

    def get(path: str, host: str = "shop.example.com"):
        return http(base + path, headers={"host": host}, timeout=2)

    wait_until(lambda: get("/").status == 200, 15, what="the router to route")
    # Whole segments: /api/users is rewritten to /users; /apix is not under /api.
    answer = get("/api/users")
    assert (answer.status, answer.json()["path"]) == (200, "/users")
    assert answer.json()["headers"]["x-route"] == "api"
    assert get("/apix").json()["path"] == "/apix"
    assert get("/api").json()["path"] == "/"
    moved = get("/old")
    # No port in the filter: the listener's (not a well-known one, so it is written).
    assert (moved.status, moved.headers["location"]) == (
        301, f"http://shop.example.com:{port}/new")
    assert get("/gone/x").status == 500  # a backend that does not exist: the spec's 500
    # The admin listener's hostname keeps its own route; its intersection drops the rest.
    answer = get("/api/exact", host="admin.example.com")
    assert (answer.status, answer.headers.get("x-admin")) == (200, "yes")
    assert answer.json()["path"] == "/api/exact"
    assert get("/api/exact", host="elsewhere.org").json()["path"] == "/exact"

    gateway = status_of(mesh, "Gateway", "edge")
    listeners = {entry["name"]: entry for entry in gateway["listeners"]}
    assert conditions(gateway)["Accepted"] == ("True", "Accepted")
    assert listeners["http"]["attachedRoutes"] == 1 and listeners["admin"]["attachedRoutes"] == 1
    route = status_of(mesh, "HTTPRoute", "web")["parents"][0]
    assert conditions(route) == {"Accepted": ("True", "Accepted"),
                                 "ResolvedRefs": ("False", "BackendNotFound")}
    # The router connected: the Gateway is programmed at its address.
    assert conditions(gateway)["Programmed"] == ("True", "Programmed")
    assert gateway["addresses"] == [{"type": "IPAddress", "value": "127.0.0.1"}]
    shown = subprocess.run(pilotfish("gateway-status", "--discovery-address",
                                     f"127.0.0.1:{mesh.debug_port}"),
                           capture_output=True, text=True, check=True).stdout
    assert "Gateway shop/edge" in shown and "listener admin" in shown
    assert "ResolvedRefs=False (BackendNotFound)" in shown


MESH_ROUTE = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.9.1
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web-canary, namespace: shop}
spec:
  clusterIP: 10.96.9.2
  selector: {app: web, track: canary}
  ports: [{name: http, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: canary, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - matches: [{headers: [{name: x-canary, value: "yes"}]}]
    backendRefs: [{name: web-canary, port: 80}]
  - backendRefs: [{name: web, port: 80}]
"""


def test_a_mesh_route_on_a_service_reaches_the_sidecars(mesh: LocalMesh) -> None:
    """GAMMA: an HTTPRoute whose parent is a Service becomes the sidecars' route for that
    Service's host (Envoy holds it, ACKed), and its status names the Service."""
    mesh.write("shop.yaml", MESH_ROUTE)
    mesh.start_discovery()
    client = mesh.start_proxy("client-0", "shop", proxy_type="sidecar", ip="127.0.43.1",
                              labels={"app": "client"})
    mesh.wait_synced("client-0.shop")
    dump = client.config_dump()
    routes = next(c for c in dump["configs"] if c["@type"].endswith(".RoutesConfigDump"))
    table = next(r["route_config"] for r in routes["dynamic_route_configs"]
                 if r["route_config"]["name"] == "80")
    vhost = next(v for v in table["virtual_hosts"]
                 if "web.shop.svc.cluster.local" in v["domains"])
    first, second = vhost["routes"][:2]
    assert first["match"]["headers"][0]["name"] == "x-canary"
    assert first["route"]["cluster"] == "outbound|80||web-canary.shop.svc.cluster.local"
    assert second["route"]["cluster"] == "outbound|80||web.shop.svc.cluster.local"
    (parent,) = status_of(mesh, "HTTPRoute", "canary")["parents"]
    assert parent["parentRef"]["kind"] == "Service"
    assert conditions(parent)["Accepted"] == ("True", "Accepted")
