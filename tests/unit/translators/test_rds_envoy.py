"""Real Envoy accepts the generated route configurations (``envoy --mode validate``).

Every RouteConfiguration RDS produces for a sidecar and a gateway is embedded in a static
listener's HTTP connection manager, with the same HTTP filters LDS installs (fault, CORS,
router) and every cluster the routes name declared as a static cluster.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import parse_node
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.plugins.envoy.backend import envoy_binary
from pilotfish.testing.generators import generate

pytestmark = pytest.mark.envoy

CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 9080}, {name: probe, port: 7070}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: None
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: s, ttl: 10s}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews, reviews.example.com]
  gateways: [mesh, istio-system/public]
  http:
  - name: everything
    match:
    - name: m
      uri: {regex: "/r/[0-9]+"}
      ignoreUriCase: true
      headers: {x-a: {exact: a}, x-b: {prefix: b}, x-c: {regex: "c+"}, x-d: {}}
      withoutHeaders: {x-e: {exact: e}, x-f: {regex: "*"}}
      queryParams: {q: {exact: "1"}, r: {regex: "*"}}
      method: {exact: GET}
      authority: {prefix: reviews}
      scheme: {exact: http}
    route:
    - destination: {host: reviews, subset: v1}
      weight: 60
      headers: {request: {set: {x-w: "1", host: w.example.com}}}
    - destination: {host: reviews, subset: v2}
      weight: 40
    timeout: 2s
    retries: {attempts: 3, perTryTimeout: 1s, retryOn: "5xx,429", retryRemoteLocalities: true,
              backoff: 25ms}
    fault:
      delay: {fixedDelay: 1s, percentage: {value: 0.5}}
      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 1}}
    mirror: {host: db}
    mirrorPercentage: {value: 10}
    mirrors: [{destination: {host: reviews, subset: v3}, percentage: {value: 1}}]
    corsPolicy:
      allowOrigins: [{exact: "https://a.example.com"}, {prefix: "https://b"}]
      allowMethods: [GET]
      allowHeaders: [x-a]
      exposeHeaders: [x-b]
      maxAge: 1h
      allowCredentials: false
    headers:
      request: {set: {x-set: s}, add: {x-add: a}, remove: [x-rm]}
      response: {set: {x-rs: s}, add: {x-ra: a}, remove: [x-rr]}
    rewrite: {uri: /new, authority: new.example.com}
  - match: [{uri: {prefix: /regex}}]
    rewrite: {uriRegexRewrite: {match: "^/regex/(.*)$", rewrite: "/\\\\1"}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {exact: /redirect}}]
    redirect: {uri: /elsewhere, authority: x.example.com, scheme: https, port: 8443,
               redirectCode: 307}
  - match: [{uri: {exact: /derive}}]
    redirect: {prefixRewrite: /p, derivePort: FROM_REQUEST_PORT}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: teapot}}
  - match: [{uri: {exact: /bytes}}]
    directResponse: {status: 200, body: {bytes: aGVsbG8=}}
  - route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*/reviews.example.com", "secure.example.com"]
  - port: {number: 80, name: http-redirect, protocol: HTTP}
    hosts: [secure.example.com]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [reviews.example.com]
    tls: {mode: SIMPLE, credentialName: reviews-cert}
  - port: {number: 8080, name: http-empty, protocol: HTTP}
    hosts: [nothing.example.com]
"""


def route_configs() -> list[route_pb2.RouteConfiguration]:
    objects, errors = load_text(CONFIG, "envoy.yaml")
    assert not errors
    out: list[route_pb2.RouteConfiguration] = []
    for mesh in (MeshSettings(), MeshSettings(outbound_traffic_policy="REGISTRY_ONLY")):
        push = push_context.build(objects, mesh, "v1")
        sidecar = parse_node("sidecar~10.1.0.1~pp-1.default~default.svc.cluster.local")
        router = parse_node("router~10.1.0.2~gw-1.istio-system~istio-system.svc.cluster.local",
                            {"LABELS": {"istio": "ingressgateway"}})
        out += generate(types.ROUTE, push, sidecar)
        out += generate(types.ROUTE, push, router)
    return out


def clusters_of(configs: Iterable[route_pb2.RouteConfiguration]) -> Iterator[str]:
    for config in configs:
        for vhost in config.virtual_hosts:
            for route in vhost.routes:
                if not route.HasField("route"):
                    continue
                if route.route.cluster:
                    yield route.route.cluster
                yield from (w.name for w in route.route.weighted_clusters.clusters)
                yield from (m.cluster for m in route.route.request_mirror_policies)


def bootstrap(configs: list[route_pb2.RouteConfiguration]) -> dict[str, Any]:
    """One static listener per route configuration, each with LDS's HTTP filter chain."""
    filters = [
        {"name": "envoy.filters.http.fault", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
        {"name": "envoy.filters.http.cors", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
        {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
    ]
    listeners = [{
        "name": f"listener-{index}",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 20000 + index}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network."
                         "http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": config.name,
                "route_config": json_format.MessageToDict(config),
                "http_filters": filters,
            },
        }]}],
    } for index, config in enumerate(configs)]
    clusters = [
        {"name": name, "type": "STATIC", "connect_timeout": "1s",
         "load_assignment": {"cluster_name": name}}
        for name in sorted(set(clusters_of(configs)))
    ]
    return {"static_resources": {"listeners": listeners, "clusters": clusters}}


def test_envoy_accepts_generated_route_configurations(tmp_path: Path) -> None:
    envoy = envoy_binary()
    configs = route_configs()
    names = {c.name for c in configs}
    assert {"7070", "9080", "http.80", "http.8080", "https.443.https.public.istio-system"} <= names
    assert "PassthroughCluster" in set(clusters_of(configs))
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap(configs)))
    result = subprocess.run(
        [str(envoy), "--mode", "validate", "-c", str(path), "-l", "error"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
