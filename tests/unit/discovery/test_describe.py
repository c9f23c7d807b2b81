"""``describe_pod``: what applies to one pod, from a push built of plain config."""

from __future__ import annotations

from pilotfish.cli.describe import text
from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.yamlload import load_text
from pilotfish.discovery.describe import describe_pod

CONFIG = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v2
  namespace: shop
  labels: {app: reviews, version: v2}
  annotations: {sidecar.istio.io/status: '{}'}
spec:
  serviceAccountName: reviews
  containers: [{name: app, ports: [{name: http-web, containerPort: 9080}]}]
status: {podIP: 10.1.0.7}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: http-web}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [edge]
  http: [{route: [{destination: {host: reviews.shop.svc.cluster.local}}]}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  portLevelMtls: {"9080": {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-front, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/front"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other, namespace: shop}
spec:
  selector: {matchLabels: {app: ratings}}
  action: DENY
  rules: [{}]
"""


def describe(config: str, namespace: str, name: str) -> dict | None:
    objects, errors = load_text(config, "describe.yaml")
    assert not errors, errors
    return describe_pod(push_context.build(objects, MeshSettings(), "v1"), namespace, name)


def test_a_sidecar_pod_with_its_service_routes_subsets_and_policies():
    found = describe(CONFIG, "shop", "reviews-v2")
    assert found is not None
    assert found["pod"] == {"name": "reviews-v2", "namespace": "shop", "ip": "10.1.0.7",
                            "serviceAccount": "reviews",
                            "labels": {"app": "reviews", "version": "v2"},
                            "dataplane": "sidecar", "waypoint": ""}
    [service] = found["services"]
    assert service["host"] == "reviews.shop.svc.cluster.local"
    assert service["ports"] == [{"name": "http", "port": 9080, "protocol": "HTTP",
                                 "targetPort": 9080}]
    assert service["destinationRule"] == {"name": "reviews.shop", "matchingSubsets": ["v2"],
                                          "otherSubsets": ["v1"], "tlsMode": "ISTIO_MUTUAL"}
    assert service["virtualService"]["name"] == "reviews.shop"
    assert service["virtualService"]["routes"] == [
        "HTTP: header end-user exact jason -> reviews subset v2",
        "HTTP: everything -> reviews subset v1 80%, reviews subset v2 20%"]
    assert service["gateways"] == ["shop/edge"]
    assert found["peerAuthentication"] == {"mode": "STRICT", "ports": {"9080": "PERMISSIVE"},
                                           "applied": ["default.istio-system", "reviews.shop"]}
    assert found["authorizationPolicies"] == [{"name": "only-front.shop", "action": "ALLOW"}]
    printed = text(found)
    assert "Matching subsets: v2" in printed and "Port 9080: PERMISSIVE" in printed
    assert "Exposed on Gateway shop/edge" in printed


def test_an_ambient_pod_and_its_services_waypoint():
    config = """\
apiVersion: v1
kind: Namespace
metadata: {name: amb, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: amb, labels: {app: web}}
status: {podIP: 10.1.0.9}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: amb, labels: {istio.io/use-waypoint: waypoint}}
spec: {selector: {app: web}, clusterIP: 10.96.0.9, ports: [{name: http, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: amb}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"""
    found = describe(config, "amb", "web-1")
    assert found is not None
    assert found["pod"]["dataplane"] == "ambient" and found["pod"]["waypoint"] == ""
    assert found["services"][0]["waypoint"] == "waypoint.amb"
    assert found["peerAuthentication"] == {"mode": "PERMISSIVE", "ports": {}, "applied": []}


def test_an_unknown_pod_is_none():
    assert describe(CONFIG, "shop", "nope") is None
