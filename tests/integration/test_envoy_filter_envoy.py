"""EnvoyFilter on a real Envoy gateway: patches added after the proxy connected reach it,
Envoy accepts them (no NACK), and traffic shows them — a Lua filter inserted before the
router adds a response header, a route table merge adds another, and removing the RBAC
filter lets a request through that an AuthorizationPolicy denied. A broken EnvoyFilter
beside them is reported and skipped while everything else is served."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import parse_node
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.plugins import envoy_filter
from pilotfish.plugins.envoy.backend import envoy_binary
from pilotfish.testing.envoy_check import envoy_accepts
from pilotfish.testing.generators import generate
from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import free_port, http, wait_until

pytestmark = pytest.mark.envoy

envoy_binary()  # part of the dev install: a missing binary fails loudly

APP = "127.0.20.7"
APP_PORT = 18087

MESH = """\
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
  servers: [{{port: {{number: {port}, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [edge]
  http: [{{route: [{{destination: {{host: web, port: {{number: 80}}}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: no-secrets, namespace: default}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: DENY
  rules: [{{to: [{{operation: {{paths: ["/secret"]}}}}]}}]
"""

# Written after the gateway connected.
ENVOY_FILTER = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: gateway-tweaks, namespace: default}
spec:
  workloadSelector: {labels: {istio: ingressgateway}}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: GATEWAY
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter: {name: envoy.filters.http.router}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.lua
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
          default_source_code:
            inline_string: |
              function envoy_on_response(response_handle)
                response_handle:headers():add("x-envoy-filter", "lua")
              end
  - applyTo: HTTP_FILTER
    match:
      context: GATEWAY
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter: {name: envoy.filters.http.rbac}
    patch: {operation: REMOVE}
  - applyTo: ROUTE_CONFIGURATION
    match: {context: GATEWAY, routeConfiguration: {portNumber: PORT}}
    patch:
      operation: MERGE
      value:
        response_headers_to_add:
        - header: {key: x-route-config, value: merged}
"""

# Its value is not an Envoy Cluster: reported, skipped, and nothing else suffers.
BROKEN = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: broken, namespace: istio-system}
spec:
  configPatches:
  - applyTo: CLUSTER
    patch:
      operation: MERGE
      value: {connect_timeout: "not a duration"}
"""


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    local = LocalMesh(tmp_path)
    try:
        yield local
    finally:
        local.stop()


def test_envoy_filter_added_later_adds_headers_and_removes_the_rbac_filter(mesh: LocalMesh):
    port = free_port()
    mesh.write("mesh.yaml", MESH.format(app=APP, app_port=APP_PORT, port=port))
    mesh.write("broken.yaml", BROKEN)
    mesh.start_discovery()
    mesh.start_apps([f"web:v1@{APP}:{APP_PORT}"])
    gateway = mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"})
    mesh.wait_synced("gw-1.default")

    url = f"http://127.0.0.1:{port}"
    before = wait_until(lambda: (r := http(f"{url}/hello", timeout=2)).status == 200 and r,
                        15, what="HTTP through the gateway")
    assert "x-envoy-filter" not in before.headers
    assert http(f"{url}/secret", timeout=2).status == 403  # the RBAC filter denies it

    # The broken EnvoyFilter is reported with what is wrong, and applies nowhere.
    errors = http(f"{mesh.debug}/debug/config_errors").json()
    (broken,) = [e for e in errors if e["name"] == "broken"]
    assert broken["severity"] == "warning" and broken["kind"] == "EnvoyFilter"
    assert "the EnvoyFilter is not applied" in broken["message"]
    assert broken["field"] == "spec.configPatches[0].patch.value"

    mesh.write("envoy-filter.yaml", ENVOY_FILTER.replace("PORT", str(port)))
    patched = wait_until(
        lambda: (r := http(f"{url}/hello", timeout=2)).headers.get("x-envoy-filter") and r,
        15, what="the Lua filter to add its header")
    assert patched.status == 200 and patched.json()["service"] == "web"
    assert patched.headers["x-route-config"] == "merged"
    allowed = wait_until(lambda: (r := http(f"{url}/secret", timeout=2)).status == 200 and r,
                         10, what="the RBAC filter to be removed")
    assert allowed.headers["x-envoy-filter"] == "lua"

    # Envoy took every push: all types SYNCED (an ACK), none rejected.
    synced = mesh.wait_synced("gw-1.default")
    assert {r["status"] for r in synced["resources"].values()} == {"SYNCED"}
    assert gateway.stat("listener_manager.lds.update_success") > 1  # the stats are there
    assert gateway.stat("listener_manager.lds.update_rejected") == 0
    assert gateway.stat("cluster_manager.cds.update_rejected") == 0


SIDECAR_MESH = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  selector: {app: db}
  ports: [{name: tcp-db, port: 5432}]
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: everywhere, namespace: istio-system}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        portNumber: 8080
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter: {name: envoy.filters.http.router}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.lua
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
          default_source_code:
            inline_string: "function envoy_on_request(h) h:headers():add('x-in', '1') end"
  - applyTo: NETWORK_FILTER
    match:
      context: SIDECAR_OUTBOUND
      listener:
        portNumber: 5432
        filterChain: {filter: {name: envoy.filters.network.tcp_proxy}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          stat_prefix: db
          rules: {action: DENY, policies: {}}
  - applyTo: NETWORK_FILTER
    match:
      context: SIDECAR_OUTBOUND
      listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager}}}
    patch:
      operation: MERGE
      value:
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.\
http_connection_manager.v3.HttpConnectionManager
          common_http_protocol_options: {idle_timeout: 30s}
  - applyTo: LISTENER_FILTER
    match: {context: SIDECAR_INBOUND, listener: {name: virtualInbound}}
    patch:
      operation: REMOVE
  - applyTo: CLUSTER
    match: {context: SIDECAR_OUTBOUND, cluster: {service: db.shop.svc.cluster.local}}
    patch: {operation: MERGE, value: {connect_timeout: 2s, per_connection_buffer_limit_bytes: 8192}}
  - applyTo: CLUSTER
    patch:
      operation: ADD
      value:
        name: lua_cluster
        type: STRICT_DNS
        connect_timeout: 0.5s
        load_assignment:
          cluster_name: lua_cluster
          endpoints:
          - lb_endpoints:
            - endpoint: {address: {socket_address: {address: localhost, port_value: 8888}}}
"""


def test_envoy_accepts_a_sidecar_patched_in_both_contexts(tmp_path: Path) -> None:
    objects, errors = load_text(SIDECAR_MESH, "mesh.yaml")
    assert not errors
    push = push_context.build(objects, MeshSettings(), "v1")
    proxy = parse_node("sidecar~10.0.0.5~web-1.shop~shop.svc.cluster.local",
                       {"LABELS": {"app": "web"}})

    def sent(type_url: str) -> list[dict[str, object]]:
        messages = [copy.deepcopy(m) for m in generate(type_url, push, proxy, {})]
        before = len(str(messages))
        envoy_filter.pilotfish_patch_resources(type_url, proxy.scope, push, messages)
        assert len(str(messages)) != before  # every type was patched
        return [json_format.MessageToDict(m) for m in messages]

    clusters = sent(types.CLUSTER)
    assert "lua_cluster" in {c["name"] for c in clusters}
    envoy_accepts(tmp_path, listeners=sent(types.LISTENER), clusters=clusters)
