"""Generated listeners are accepted by a real Envoy (``envoy --mode validate``).

Each scenario's listeners go into the agent's real bootstrap as static listeners, next to a
stub static cluster for every cluster they name. RDS and credential secrets stay on ADS and
ISTIO_MUTUAL secrets on ``sds-grpc``, exactly as the bootstrap declares them, so Envoy
checks the references as it would for the pushed resources.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import parse_node
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.plugins.envoy.backend import envoy_binary
from pilotfish.testing.envoy_check import envoy_accepts
from pilotfish.testing.generators import generate as generated
from pilotfish.translators.listener_filters import ALL, NONE, Detection

pytestmark = pytest.mark.envoy

# Envoy is part of the dev install (./dev): a missing binary fails loudly, never skips.
envoy_binary()

SIDECAR_CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc-api, port: 9090}
  - {name: tcp-admin, port: 9999, targetPort: 9000}
  - {name: stats, port: 7000}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: tcp-db, port: 5432}, {name: mysql, port: 3306}, {name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: cache, namespace: default}
spec:
  clusterIP: 10.96.0.30
  ports: [{name: data, port: 7000}, {name: tls-data, port: 6380}]
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: default}
spec:
  clusterIP: None
  ports: [{name: tcp-peer, port: 7000}, {name: other, port: 7100}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: default}
spec:
  hosts: [api.example.com, pay.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}, {number: 5672, name: tcp, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ranges, namespace: default}
spec:
  hosts: [legacy.internal]
  addresses: [192.168.0.0/16, 10.200.0.1]
  resolution: STATIC
  ports: [{number: 7000, name: tcp, protocol: TCP}, {number: 7100, name: auto}]
  endpoints: [{address: 192.168.1.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [db]
  tcp:
  - route:
    - {destination: {host: db, subset: v1}, weight: 70}
    - {destination: {host: db, subset: v2}, weight: 30}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cache, namespace: default}
spec:
  hosts: [cache]
  tls:
  - match: [{sniHosts: [a.cache.example.com, b.cache.example.com]}]
    route: [{destination: {host: cache, subset: a}}]
  - match: [{sniHosts: [b.cache.example.com]}]
    route: [{destination: {host: cache, subset: b}}]
"""

GATEWAY_CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}, {name: https, port: 443}, {name: tcp-db, port: 5432}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["shop/web.example.com"]
  - port: {number: 8080, name: http-api, protocol: HTTP}
    hosts: ["api.example.com"]
  - port: {number: 8443, name: https-web, protocol: HTTPS}
    hosts: ["shop/web.example.com"]
    tls: {mode: SIMPLE, credentialName: web-cert}
  - port: {number: 8443, name: https-api, protocol: HTTPS}
    hosts: ["api.example.com"]
    tls: {mode: MUTUAL, credentialName: api-cert, subjectAltNames: [client.example.com]}
  - port: {number: 8443, name: https-partner, protocol: HTTPS}
    hosts: ["partner.example.com"]
    tls: {mode: OPTIONAL_MUTUAL, credentialName: partner-cert, minProtocolVersion: TLSV1_3}
  - port: {number: 8443, name: tls-pass, protocol: TLS}
    hosts: ["pass.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 15443, name: tls-mesh, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: ISTIO_MUTUAL}
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 9443, name: tls-db, protocol: TLS}
    hosts: ["db.example.com"]
    tls: {mode: SIMPLE, credentialName: db-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: l4, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [istio-system/public]
  tls:
  - match: [{sniHosts: [pass.example.com]}]
    route: [{destination: {host: web, port: {number: 443}}}]
  tcp:
  - route:
    - {destination: {host: web, port: {number: 5432}}, weight: 50}
    - {destination: {host: web, port: {number: 5432}, subset: b}, weight: 50}
"""

FILE_TLS_CONFIG = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: files, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ["web.example.com"]
    tls:
      mode: MUTUAL
      serverCertificate: {dir}/cert.pem
      privateKey: {dir}/key.pem
      caCertificates: {dir}/cert.pem
"""

SIDECAR_NODE = "sidecar~10.0.0.5~web-1.default~default.svc.cluster.local"
ROUTER_NODE = "router~10.0.0.9~gw-1.istio-system~istio-system.svc.cluster.local"


def generate(config: str, node: str, labels: dict[str, str], mesh: MeshSettings,
             detection: Detection = ALL) -> list[Any]:
    objects, errors = load_text(config, "test.yaml")
    assert not errors
    push = push_context.build(objects, mesh, "v1")
    proxy = parse_node(node, {"LABELS": labels})
    out = generated(types.LISTENER, push, proxy, detection=detection)
    assert out, "the scenario must produce listeners"
    return [json_format.MessageToDict(listener) for listener in out]


def validate(listeners: list[Any], tmp_path: Path, proxy_type: str) -> None:
    envoy_accepts(tmp_path, listeners=listeners, proxy_type=proxy_type)


@pytest.mark.parametrize("policy", ["ALLOW_ANY", "REGISTRY_ONLY"])
def test_envoy_accepts_sidecar_listeners(tmp_path: Path, policy: str) -> None:
    mesh = MeshSettings(outbound_traffic_policy=policy, protocol_detection_timeout=0.1)
    listeners = generate(SIDECAR_CONFIG, SIDECAR_NODE, {"app": "web"}, mesh)
    names = {listener["name"] for listener in listeners}
    # HTTP, auto-detect, TCP-with-VIP and SNI listeners are all in the scenario.
    assert {"virtualOutbound", "virtualInbound", "0.0.0.0_80", "0.0.0.0_7000",
            "10.96.0.20_5432", "0.0.0.0_443", "10.96.0.30_6380"} <= names
    validate(listeners, tmp_path, "sidecar")


# Opaque TCP without an address on an HTTP port, and an undeclared server-first port.
SNIFFING_EDGES = """---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: default}
spec:
  hosts: [legacy.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 80, name: tcp, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mysql, namespace: default}
spec:
  hosts: [mysql.internal]
  addresses: [10.200.0.7]
  resolution: STATIC
  endpoints: [{address: 10.1.0.7}]
  ports: [{number: 3306, name: db}]
"""


@pytest.mark.parametrize("sniffers", [
    ALL, NONE, Detection(tls=True, http_alpn=()), Detection(tls=False),
    Detection(tls=True, http_alpn=("h2c",)),
], ids=["all", "none", "tls-only", "http-only", "http2-only"])
def test_envoy_accepts_sidecar_listeners_for_each_sniffer_set(
    tmp_path: Path, sniffers: Detection
) -> None:
    mesh = MeshSettings(protocol_detection_timeout=0.1)
    listeners = generate(SIDECAR_CONFIG + SNIFFING_EDGES, SIDECAR_NODE, {"app": "web"}, mesh,
                         sniffers)
    validate(listeners, tmp_path, "sidecar")


def test_envoy_accepts_gateway_listeners_without_the_tls_sniffer(tmp_path: Path) -> None:
    listeners = generate(GATEWAY_CONFIG, ROUTER_NODE, {"istio": "ingressgateway"},
                         MeshSettings(), Detection(tls=False))
    assert not any(f["name"].endswith("tls_inspector")
                   for listener in listeners for f in listener.get("listenerFilters", ()))
    validate(listeners, tmp_path, "router")


def test_envoy_accepts_gateway_listeners(tmp_path: Path) -> None:
    listeners = generate(GATEWAY_CONFIG, ROUTER_NODE, {"istio": "ingressgateway"},
                         MeshSettings())
    assert [listener["name"] for listener in listeners] == [
        "0.0.0.0_8080", "0.0.0.0_8443", "0.0.0.0_9000", "0.0.0.0_9443", "0.0.0.0_15443"]
    validate(listeners, tmp_path, "router")


def test_envoy_accepts_gateway_tls_from_files(tmp_path: Path) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=web.example.com",
         "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
        check=True, capture_output=True,
    )
    listeners = generate(FILE_TLS_CONFIG.format(dir=tmp_path), ROUTER_NODE,
                         {"istio": "ingressgateway"}, MeshSettings())
    validate(listeners, tmp_path, "router")


# Istio's east-west gateway sample (expose-istiod.yaml): any SNI passed through to istiod.
EXPOSE_ISTIOD = """\
apiVersion: v1
kind: Service
metadata: {name: istiod, namespace: istio-system}
spec:
  clusterIP: 10.96.0.40
  ports: [{name: tls-istiod, port: 15012}, {name: https-webhook, port: 443, targetPort: 15017}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istiod-gateway, namespace: istio-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {name: tls-istiod, number: 15012, protocol: tls}
    tls: {mode: PASSTHROUGH}
    hosts: ["*"]
  - port: {name: tls-istiodwebhook, number: 15017, protocol: tls}
    tls: {mode: PASSTHROUGH}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: istiod-vs, namespace: istio-system}
spec:
  hosts: ["*"]
  gateways: [istiod-gateway]
  tls:
  - match: [{port: 15012, sniHosts: ["*"]}]
    route: [{destination: {host: istiod.istio-system.svc.cluster.local, port: {number: 15012}}}]
  - match: [{port: 15017, sniHosts: ["*"]}]
    route: [{destination: {host: istiod.istio-system.svc.cluster.local, port: {number: 443}}}]
"""


def test_envoy_accepts_passthrough_of_any_sni(tmp_path: Path) -> None:
    """``*`` among SNI names matches any name (Envoy refuses ``*`` in server_names)."""
    listeners = generate(EXPOSE_ISTIOD, ROUTER_NODE, {"istio": "eastwestgateway"},
                         MeshSettings())
    chains = [chain for listener in listeners for chain in listener["filterChains"]]
    assert [chain.get("filterChainMatch", {}).get("serverNames") for chain in chains] == [
        None, None]
    assert {chain["filters"][-1]["typedConfig"]["cluster"] for chain in chains} == {
        "outbound|15012||istiod.istio-system.svc.cluster.local",
        "outbound|443||istiod.istio-system.svc.cluster.local"}
    validate(listeners, tmp_path, "router")
