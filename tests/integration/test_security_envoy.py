"""Mesh security config is accepted by a real Envoy (``envoy --mode validate``), and by the
native proxy (every listener and cluster through its subset check and build, as an xDS
update would go).

Listeners and clusters from the LDS and CDS translators go into the agent's real bootstrap
as static resources: STRICT, PERMISSIVE and DISABLE sidecars with port-level modes, auto
mTLS and ISTIO_MUTUAL clusters, RBAC (HTTP and network) for every attribute kind, and JWT.
Secrets stay on the bootstrap's ``sds-grpc`` cluster exactly as pushed; validation needs
the reference, not the secret.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.native.config import ConfigState
from pilotfish.core.proxy import parse_node
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.plugins.envoy.backend import envoy_binary
from pilotfish.testing.envoy_check import envoy_accepts
from pilotfish.testing.generators import generate
from pilotfish.translators.listener_filters import ALL, Detection

pytestmark = pytest.mark.envoy

envoy_binary()  # part of the dev install: a missing binary fails loudly
PROXIES = ["envoy", "native"]

JWKS = json.dumps({"keys": [{
    "kty": "RSA", "alg": "RS256", "kid": "test", "e": "AQAB",
    "n": "4DT5Ma4DHSgJRziXwxqchgJPiZvhVLixCAgSXaPHnMSqwgFw0qBA9A8HQspYWLNo8ssBSUlmuws6rLkUFq"
         "MGvL-b_wlDMDHXbAQrWDbbEtd9ozQAyeaVIPCfMV1_dElhfdyRHh3bsluv1p5-h5S2yl3FeJyie74nq3M_"
         "5GKJu5tMz5Zme8Qqe_GvSFJ26I1L82FNIh2ktRwfAlylmjG7Whga2d-aK73SKSonxBNdRe9UP8Fifotwrtq"
         "1ekGtQLL4JRXA9BXptejoG0u63K6nUJNU_jc0kSxjiwwc8B99xxeKTN1WIVi3_eisjPphZEWQ877ZIh2eb"
         "2kh4Q9Ywz3c-w",
}]})

WORKLOADS = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 9090}
  - {name: tcp-db, port: 5432}
  - {name: stats, port: 7000}
  - {name: mysql, port: 3306}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: web}
status: {podIP: 10.0.0.5}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  selector: {app: api}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: shop, labels: {app: api, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: api}
status: {podIP: 10.0.0.6}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: shop}
spec:
  host: api
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  subsets: [{name: v1, labels: {app: api}}]
"""

POLICIES = f"""\
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: audit-all, namespace: shop}}
spec: {{action: AUDIT, rules: [{{}}]}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny, namespace: istio-system}}
spec:
  action: DENY
  rules:
  - from: [{{source: {{notNamespaces: [shop, "istio-*"], notIpBlocks: [10.0.0.0/8]}}}}]
    to: [{{operation: {{methods: [DELETE], notPaths: ["/public/*"]}}}}]
  - when: [{{key: "request.headers[x-block]", values: ["*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/api", "*/sa/gateway", "cluster.local/ns/ops/*"]
        serviceAccounts: [shop/api]
        trustDomains: [cluster.local]
        remoteIpBlocks: [192.0.2.0/24]
    - source: {{requestPrincipals: ["https://issuer.example.com/*", "*"]}}
    to:
    - operation:
        hosts: ["web.shop.svc.cluster.local", "*.example.com"]
        ports: ["8080", "7000"]
        paths: ["/api/{{*}}/items/{{**}}", "*.json", "/exact"]
        notMethods: [TRACE]
    when:
    - {{key: "request.auth.claims[groups]", values: [admin]}}
    - {{key: request.auth.audiences, values: [shop]}}
    - {{key: request.auth.presenter, notValues: [bad-app]}}
    - {{key: request.auth.principal, values: ["https://issuer.example.com/alice"]}}
    - {{key: destination.ip, values: [10.0.0.5]}}
    - {{key: destination.port, values: ["8080"]}}
    - {{key: connection.sni, values: ["*.svc.cluster.local"]}}
    - {{key: source.ip, values: [10.0.0.0/8]}}
    - {{key: remote.ip, values: [10.0.0.1]}}
    - {{key: source.namespace, values: [shop]}}
    - {{key: source.principal, values: ["cluster.local/ns/shop/sa/api"]}}
  - to: [{{operation: {{ports: ["5432"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: try-it, namespace: shop, annotations: {{istio.io/dry-run: "true"}}}}
spec: {{action: DENY, rules: [{{to: [{{operation: {{paths: ["/admin"]}}}}]}}]}}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: istio-system}}
spec:
  jwtRules:
  - issuer: https://issuer.example.com
    audiences: [shop]
    jwks: '{JWKS}'
    fromHeaders: [{{name: x-jwt, prefix: "Bearer "}}]
    fromParams: [token]
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders: [{{header: x-user, claim: sub}}]
  - issuer: https://other.example.com
    jwksUri: https://other.example.com/jwks
"""

GATEWAY = """\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp, namespace: istio-system}
spec:
  hosts: ["*"]
  gateways: [public]
  tcp: [{route: [{destination: {host: web.shop.svc.cluster.local, port: {number: 5432}}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  rules: [{from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]}]
"""

SIDECAR_NODE = "sidecar~10.0.0.5~web-1.shop~shop.svc.cluster.local"
ROUTER_NODE = "router~10.0.0.9~gw-1.istio-system~istio-system.svc.cluster.local"


def mode_policy(mode: str) -> str:
    return f"""---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: istio-system}}
spec: {{mtls: {{mode: {mode}}}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  portLevelMtls:
    "5432": {{mode: PERMISSIVE}}
    "9999": {{mode: DISABLE}}
    "9443": {{mode: STRICT}}
"""


def resources(config: str, node: str, labels: dict[str, str],
              detection: Detection = ALL) -> tuple[list[Any], list[Any]]:
    objects, errors = load_text(config, "test.yaml")
    assert not errors, errors
    push = push_context.build(objects, MeshSettings(protocol_detection_timeout=0.1), "v1")
    proxy = parse_node(node, {"LABELS": labels})
    listeners = generate(types.LISTENER, push, proxy, detection=detection)
    clusters = generate(types.CLUSTER, push, proxy, {})
    return ([json_format.MessageToDict(item) for item in listeners],
            [json_format.MessageToDict(item) for item in clusters])


def validate(listeners: list[Any], clusters: list[Any], tmp_path: Path, proxy_type: str,
             proxy: str = "envoy") -> None:
    if proxy == "native":
        native_accepts(listeners, clusters)
        return
    envoy_accepts(tmp_path, listeners=listeners, clusters=clusters, proxy_type=proxy_type,
                  namespace="shop")


def native_accepts(listeners: list[Any], clusters: list[Any]) -> None:
    """Raises ``Rejected`` naming the resource and field the native proxy refuses."""
    state = ConfigState()
    for type_url, items, message in ((types.CLUSTER, clusters, cluster_pb2.Cluster),
                                     (types.LISTENER, listeners, listener_pb2.Listener)):
        state.apply(type_url, [(item["name"], json_format.ParseDict(
            item, message()).SerializeToString()) for item in items], ())
    assert set(state.listeners) == {item["name"] for item in listeners}


def has(tree: Any, key: str) -> bool:
    return key in json.dumps(tree)


@pytest.mark.parametrize("proxy", PROXIES)
@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE", "DISABLE"])
def test_envoy_accepts_sidecars_in_every_mode_with_policies(tmp_path: Path, mode: str,
                                                            proxy: str) -> None:
    listeners, clusters = resources(WORKLOADS + POLICIES + mode_policy(mode), SIDECAR_NODE,
                                    {"app": "web", "security.istio.io/tlsMode": "istio"})
    inbound = [item for item in listeners if item["name"] == "virtualInbound"]
    assert has(inbound, "DownstreamTlsContext")  # port-level STRICT/PERMISSIVE at least
    assert has(inbound, "envoy.filters.http.rbac") and has(inbound, "envoy.filters.network.rbac")
    assert has(inbound, "envoy.filters.http.jwt_authn")
    assert has(clusters, "tlsMode-istio") == (mode != "DISABLE")  # auto mTLS to web
    validate(listeners, clusters, tmp_path, "sidecar", proxy)


@pytest.mark.parametrize("proxy", PROXIES)
@pytest.mark.parametrize("detection", [Detection(tls=False), Detection(tls=True, http_alpn=())],
                         ids=["no-tls-sniffer", "no-http-sniffer"])
def test_envoy_accepts_mtls_sidecars_for_reduced_sniffer_sets(
    tmp_path: Path, detection: Detection, proxy: str
) -> None:
    listeners, clusters = resources(WORKLOADS + POLICIES + mode_policy("PERMISSIVE"),
                                    SIDECAR_NODE, {"app": "web"}, detection)
    validate(listeners, clusters, tmp_path, "sidecar", proxy)


@pytest.mark.parametrize("proxy", PROXIES)
def test_envoy_accepts_auto_mtls_and_istio_mutual_clusters(tmp_path: Path, proxy: str) -> None:
    listeners, clusters = resources(WORKLOADS, SIDECAR_NODE, {"app": "client"})
    by_name = {cluster["name"]: cluster for cluster in clusters}
    assert "transportSocketMatches" in by_name["outbound|80||web.shop.svc.cluster.local"]
    assert "transportSocket" in by_name["outbound|8080|v1|api.shop.svc.cluster.local"]
    validate(listeners, clusters, tmp_path, "sidecar", proxy)


@pytest.mark.parametrize("proxy", PROXIES)
def test_envoy_accepts_gateway_rbac_and_jwt(tmp_path: Path, proxy: str) -> None:
    listeners, clusters = resources(WORKLOADS + POLICIES + GATEWAY, ROUTER_NODE,
                                    {"istio": "ingressgateway"})
    assert has(listeners, "envoy.filters.http.jwt_authn")  # the mesh-wide RequestAuthn
    assert has(listeners, "envoy.filters.network.rbac")
    validate(listeners, clusters, tmp_path, "router", proxy)
