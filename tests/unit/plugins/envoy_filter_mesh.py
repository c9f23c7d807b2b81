"""The mesh the EnvoyFilter tests patch, and how they run the generators and the plugin:
what a sidecar or a router is sent, with the EnvoyFilters of the config applied."""

from __future__ import annotations

import copy
from typing import Any

from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import Proxy, parse_node
from pilotfish.core.push_context import PushContext
from pilotfish.core.yamlload import load_text
from pilotfish.plugins import envoy_filter
from pilotfish.testing.generators import generate

MESH = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
status: {podIP: 10.0.0.5}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  selector: {app: db}
  ports: [{name: tcp-db, port: 5432}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: DISABLE}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 8443, name: https-web, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: web-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [edge]
  http:
  - name: to-web
    match: [{uri: {prefix: /web}}]
    route: [{destination: {host: web, port: {number: 80}}}]
  - name: moved
    redirect: {uri: /web}
"""

HTTP_ROUTER = "envoy.filters.http.router"


def envoy_filter_yaml(name: str, patches: str, *, namespace: str = "shop",
                      selector: str = "", extra: str = "", created: str = "") -> str:
    """An EnvoyFilter document; ``patches`` is the YAML list under ``configPatches``."""
    metadata = f"{{name: {name}, namespace: {namespace}" + (
        f", creationTimestamp: '{created}'" if created else "") + "}"
    head = (f"---\napiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\n"
            f"metadata: {metadata}\nspec:\n")
    if selector:
        head += f"  workloadSelector: {{labels: {selector}}}\n"
    if extra:
        head += extra
    body = "\n".join("  " + line if line else line for line in patches.strip("\n").split("\n"))
    return head + "  configPatches:\n" + body + "\n"


def build(*docs: str) -> PushContext:
    objects, errors = load_text(MESH + "".join(docs), "mesh.yaml")
    assert not errors, errors
    return push_context.build(objects, MeshSettings(), "v1")


def sidecar(namespace: str = "shop", version: str = "", **labels: str) -> Proxy:
    metadata: dict[str, Any] = {"LABELS": labels or {"app": "web"}}
    if version:
        metadata["ISTIO_VERSION"] = version
    return parse_node(f"sidecar~10.0.0.5~web-1.{namespace}~{namespace}.svc.cluster.local",
                      metadata)


def router(namespace: str = "shop", **labels: str) -> Proxy:
    return parse_node(f"router~10.0.0.9~gw-1.{namespace}~{namespace}.svc.cluster.local",
                      {"LABELS": labels or {"istio": "ingressgateway"}})


def patched(type_url: str, push: PushContext, proxy: Proxy) -> list[Any]:
    """What the proxy is sent of a type: generated, then patched as discovery does."""
    messages = [copy.deepcopy(m) for m in generate(type_url, push, proxy, {})]
    envoy_filter.pilotfish_patch_resources(type_url, proxy.scope, push, messages)
    return messages


def by_name(messages: list[Any]) -> dict[str, Any]:
    return {m.name: m for m in messages}


def manager(chain: listener_components_pb2.FilterChain) -> hcm_pb2.HttpConnectionManager:
    found = hcm_pb2.HttpConnectionManager()
    (hcm,) = [f for f in chain.filters if f.name.endswith("http_connection_manager")]
    assert hcm.typed_config.Unpack(found)
    return found


def http_filters(chain: listener_components_pb2.FilterChain) -> list[str]:
    return [f.name for f in manager(chain).http_filters]
