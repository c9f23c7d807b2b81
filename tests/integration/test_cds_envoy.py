"""Generated clusters are accepted by a real Envoy (``envoy --mode validate``).

Envoy rejects a whole CDS response when one cluster breaks a proto constraint, so every
DestinationRule setting that shapes a cluster is exercised here: connection pools, outlier
detection, load balancers, TLS modes, port-level settings and subsets. The clusters go into
the agent's real bootstrap as static clusters (``pilotfish.testing.envoy_check``).
"""

from __future__ import annotations

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
from pilotfish.testing.generators import generate

pytestmark = pytest.mark.envoy

envoy_binary()  # part of the dev install: a missing binary fails loudly, never skips

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: NAME, namespace: default}
spec:
  clusterIP: IP
  ports: [{name: http, port: 80}, {name: grpc-api, port: 9090}, {name: tcp-db, port: 5432},
          {port: 7000}]
"""

RULES = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pool, namespace: default}
spec:
  host: pool
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 7, connectTimeout: 250ms, maxConnectionDuration: 1h,
            tcpKeepalive: {probes: 3, time: 60s, interval: 10s}}
      http: {http1MaxPendingRequests: 3, http2MaxRequests: 9, maxRequestsPerConnection: 1,
             maxRetries: 2, idleTimeout: 30s, maxConcurrentStreams: 50}
    outlierDetection: {consecutive5xxErrors: 5, consecutiveGatewayErrors: 2, interval: 10s,
                       baseEjectionTime: 1m, maxEjectionPercent: 50, minHealthPercent: 10}
    loadBalancer:
      simple: LEAST_REQUEST
      warmupDurationSecs: 30s
      localityLbSetting:
        distribute: [{from: us-east/*, to: {us-east/*: 80, eu-west/*: 20}}]
    portLevelSettings:
    - port: {number: 9090}
      connectionPool: {http: {h2UpgradePolicy: UPGRADE, maxConcurrentStreams: 10}}
    - port: {number: 7000}
      connectionPool: {http: {useClientProtocol: true, idleTimeout: 5s}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: hash, namespace: default}
spec:
  host: hash
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: user, ttl: 0s}, ringHash: {minimumRingSize: 64}}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}}
    - port: {number: 5432}
      loadBalancer: {consistentHash: {useSourceIp: true}}
  subsets:
  - {name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}
  - {name: v2, labels: {version: v2}, trafficPolicy: {connectionPool: {http: {idleTimeout: 1s}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tls, namespace: default}
spec:
  host: tls
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  portLevelSettings:
  - port: {number: 80}
    tls: {mode: DISABLE}
  subsets:
  - name: simple
    labels: {version: v1}
    trafficPolicy: {tls: {mode: SIMPLE, sni: tls.example.com, credentialName: client-cred}}
  - name: mutual
    labels: {version: v2}
    trafficPolicy:
      tls: {mode: MUTUAL, credentialName: client-cred, subjectAltNames: [tls.example.com]}
"""

NODE = "sidecar~10.0.0.5~web-1.default~default.svc.cluster.local"


def clusters(extra: str = "") -> list[dict[str, Any]]:
    services = "---\n".join(
        SERVICES.replace("NAME", name).replace("IP", f"10.96.0.{i + 10}")
        for i, name in enumerate(("pool", "hash", "tls", "files")))
    objects, errors = load_text(services + "---\n" + RULES + extra, "test.yaml")
    assert not errors, errors
    push = push_context.build(objects, MeshSettings(), "v1")
    proxy = parse_node(NODE, {"LABELS": {"app": "web"}})
    out = generate(types.CLUSTER, push, proxy, {})
    return [json_format.MessageToDict(cluster) for cluster in out]


def test_envoy_accepts_every_destination_rule_shape(tmp_path: Path) -> None:
    generated = clusters()
    names = {cluster["name"] for cluster in generated}
    assert {"outbound|80||pool.default.svc.cluster.local",
            "outbound|9090|v1|hash.default.svc.cluster.local",
            "outbound|80|mutual|tls.default.svc.cluster.local"} <= names
    pool = next(c for c in generated if c["name"] == "outbound|80||pool.default.svc.cluster.local")
    assert "localityWeightedLbConfig" in pool["commonLbConfig"]
    envoy_accepts(tmp_path, clusters=generated)  # raises with Envoy's own words


FILE_TLS = """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: files, namespace: default}}
spec:
  host: files
  trafficPolicy:
    tls:
      mode: MUTUAL
      clientCertificate: {dir}/cert.pem
      privateKey: {dir}/key.pem
      caCertificates: {dir}/cert.pem
      subjectAltNames: [files.example.com]
"""


def test_envoy_accepts_mutual_tls_from_files(tmp_path: Path) -> None:
    """Generation crashed on this (the client certificate went into the wrong message), and
    as the rule has no exportTo every proxy in the mesh got no clusters at all. The files
    need not be there: the cluster waits for the agent to serve them."""
    generated = clusters(FILE_TLS.format(dir=tmp_path))
    files = next(c for c in generated
                 if c["name"] == "outbound|80||files.default.svc.cluster.local")
    context = files["transportSocket"]["typedConfig"]["commonTlsContext"]
    # Handed over by the agent's SDS, under Istio's names.
    [certificate] = context["tlsCertificateSdsSecretConfigs"]
    assert certificate["name"] == f"file-cert:{tmp_path}/cert.pem~{tmp_path}/key.pem"
    root = context["combinedValidationContext"]["validationContextSdsSecretConfig"]
    assert root["name"] == f"file-root:{tmp_path}/cert.pem"
    envoy_accepts(tmp_path, clusters=generated)


UNIX_ENDPOINT = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: local-socket, namespace: default}
spec:
  hosts: [example.local]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: "unix:///var/run/example/socket"}]
"""


def test_envoy_accepts_a_unix_socket_endpoint(tmp_path: Path) -> None:
    """Every proxy that saw this ServiceEntry NACKed EDS (``malformed IP address``)."""
    objects, errors = load_text(UNIX_ENDPOINT, "test.yaml")
    assert not errors, errors
    push = push_context.build(objects, MeshSettings(), "v1")
    proxy = parse_node(NODE, {"LABELS": {"app": "web"}})
    [assignment] = [json_format.MessageToDict(cla)
                    for cla in generate(types.ENDPOINT, push, proxy, {})]
    address = assignment["endpoints"][0]["lbEndpoints"][0]["endpoint"]["address"]
    assert address == {"pipe": {"path": "/var/run/example/socket"}}
    envoy_accepts(tmp_path, clusters=[{"name": assignment["clusterName"], "type": "STATIC",
                                       "load_assignment": assignment}])
