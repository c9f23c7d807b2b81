"""The LDS/RDS contract: every route name a listener asks for is a route RDS generates."""

from __future__ import annotations

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import Proxy, parse_node
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.testing.generators import generate

CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc-api, port: 9090}
  - {name: tcp-db, port: 5432}
  - {name: undeclared, port: 7000}
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: shop}
spec:
  clusterIP: None
  ports: [{name: peer, port: 7100}, {name: https, port: 8443}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec:
  hosts: [api.example.com]
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}, {number: 8000, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 8081, name: redirect, protocol: HTTP}
    hosts: ["*"]
    tls: {httpsRedirect: true}
  - port: {number: 8443, name: https-web, protocol: HTTPS}
    hosts: ["web.example.com"]
    tls: {mode: SIMPLE, credentialName: web-cert}
  - port: {number: 8443, name: https-mesh, protocol: HTTPS}
    hosts: ["mesh.example.com"]
    tls: {mode: ISTIO_MUTUAL}
  - port: {number: 8443, name: tls-pass, protocol: TLS}
    hosts: ["pass.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 9443, name: https-public, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: public}
"""


def route_names(proxy: Proxy) -> tuple[set[str], set[str]]:
    """(route names the listeners reference, route names RDS generates)."""
    objects, errors = load_text(CONFIG, "contract.yaml")
    assert not errors
    push = push_context.build(objects, MeshSettings(), "v1")
    wanted = set()
    for listener in generate(types.LISTENER, push, proxy, {}):
        for chain in listener.filter_chains:
            for network_filter in chain.filters:
                manager = hcm_pb2.HttpConnectionManager()
                if network_filter.typed_config.Unpack(manager) and manager.HasField("rds"):
                    wanted.add(manager.rds.route_config_name)
    served = {config.name for config in generate(types.ROUTE, push, proxy, {})}
    return wanted, served


def test_sidecar_listeners_name_exactly_the_routes_rds_serves() -> None:
    proxy = parse_node("sidecar~10.0.0.5~web-1.shop~shop.svc.cluster.local",
                       {"LABELS": {"app": "web"}})
    wanted, served = route_names(proxy)
    assert wanted == served == {"80", "9090", "7000", "7100", "8000"}


def test_gateway_listeners_only_name_routes_rds_serves() -> None:
    proxy = parse_node("router~10.0.0.9~gw-1.istio-system~istio-system.svc.cluster.local",
                       {"LABELS": {"istio": "ingressgateway"}})
    wanted, served = route_names(proxy)
    assert wanted == {
        "http.8080", "http.8081",
        "https.8443.https-web.public.istio-system",
        "https.8443.https-mesh.public.istio-system",
        "https.9443.https-public.public.istio-system",
    }
    assert wanted <= served
