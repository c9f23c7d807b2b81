"""What the translators emit for DestinationRule traffic policies is taken by the native
proxy (not NACKed) and means what it means to Envoy: hashing, locality, circuit breakers,
outlier detection. Real translator output, no sockets."""

from __future__ import annotations

from typing import Any

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.native import breakers, hashing, routing
from pilotfish.core.native.config import ConfigState, Keepalive, SlowStart
from pilotfish.core.native.outlier import Outlier
from pilotfish.core.proxy import parse_node
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.testing.generators import generate

REGION, ZONE = "topology.kubernetes.io/region", "topology.kubernetes.io/zone"
SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: NAME, namespace: default}
spec:
  clusterIP: IP
  selector: {app: NAME}
  ports: [{name: http, port: 80}, {name: tcp-db, port: 5432}]
"""
PODS = f"""\
---
apiVersion: v1
kind: Pod
metadata: {{name: near, namespace: default, labels: {{app: pool, {REGION}: us-east,
                                                    {ZONE}: us-east-1a}}}}
status: {{podIP: 10.1.0.1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: far, namespace: default, labels: {{app: pool, {REGION}: eu-west,
                                                   {ZONE}: eu-west-1a}}}}
status: {{podIP: 10.1.0.2}}
"""
RULES = """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pool, namespace: default}
spec:
  host: pool
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 7, connectTimeout: 250ms}
      http: {http1MaxPendingRequests: 3, http2MaxRequests: 9, maxRequestsPerConnection: 1,
             maxRetries: 2, idleTimeout: 30s}
    outlierDetection: {consecutive5xxErrors: 5, consecutiveGatewayErrors: 2, interval: 10s,
                       baseEjectionTime: 1m, maxEjectionPercent: 50,
                       splitExternalLocalOriginErrors: true,
                       consecutiveLocalOriginFailures: 4}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: hash, namespace: default}
spec:
  host: hash
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: user, ttl: 60s, path: /}, ringHash: {minimumRingSize: 64}}
    portLevelSettings:
    - port: {number: 5432}
      loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: spread, namespace: default}
spec:
  host: spread
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpQueryParameterName: user, maglev: {tableSize: 251}}
      localityLbSetting:
        distribute: [{from: us-east/*, to: {us-east/*: 80, eu-west/*: 20}}]
"""
NODE = "sidecar~10.1.0.9~web-1.default~default.svc.cluster.local"


def generated(type_url: str, extra: str = "", locality: str = "us-east/us-east-1a",
              rules: str = RULES) -> dict[str, Any]:
    services = "---\n".join(SERVICES.replace("NAME", name).replace("IP", f"10.96.0.{i + 10}")
                            for i, name in enumerate(("pool", "hash", "spread")))
    objects, errors = load_text(services + PODS + rules + extra, "test.yaml")
    assert not errors, errors
    push = push_context.build(objects, MeshSettings(), "v1")
    proxy = parse_node(NODE, {"LABELS": {"app": "web"}}, locality)
    return {getattr(m, "cluster_name", "") or m.name: m for m in generate(type_url, push, proxy)}


def accepted(type_url: str, messages: dict[str, Any]) -> ConfigState:
    state = ConfigState()
    state.apply(type_url, [(name, m.SerializeToString()) for name, m in messages.items()], [])
    return state


def test_no_cluster_of_these_policies_is_nacked() -> None:
    state = accepted(types.CLUSTER, generated(types.CLUSTER))
    pool = state.clusters["outbound|80||pool.default.svc.cluster.local"]
    assert pool.limits == breakers.Limits(max_connections=7, max_pending_requests=3,
                                          max_requests=9, max_retries=2)
    assert pool.outlier_detection == Outlier(
        consecutive_5xx=5, consecutive_gateway_failure=2, enforcing_consecutive_5xx=100,
        enforcing_consecutive_gateway_failure=100, consecutive_local_origin_failure=4,
        enforcing_consecutive_local_origin_failure=100, interval=10.0,
        base_ejection_time=60.0, max_ejection_percent=50,
        split_external_local_origin_errors=True)
    assert pool.max_requests_per_connection == 1 and pool.connect_timeout == 0.25
    hashed = state.clusters["outbound|80||hash.default.svc.cluster.local"]
    assert hashed.lb == "RING_HASH" and hashed.ring_size[0] == 64
    tcp = state.clusters["outbound|5432||hash.default.svc.cluster.local"]
    assert tcp.lb == "MAGLEV" and tcp.maglev_size == 65537
    spread = state.clusters["outbound|80||spread.default.svc.cluster.local"]
    assert spread.lb == "MAGLEV" and spread.maglev_size == 251 and spread.locality_weighted
    # without thresholds of its own a cluster has Envoy's defaults
    assert state.clusters["BlackHoleCluster"].limits == breakers.Limits()


def test_routes_carry_the_hash_key() -> None:
    state = accepted(types.ROUTE, generated(types.ROUTE))
    found: dict[str, tuple[hashing.HashPolicy, ...]] = {}
    for table in state.routes.values():
        for vhost in table.vhosts:
            for route in vhost.routes:
                if isinstance(route.action, routing.Forward):
                    found[route.action.clusters[0][0]] = route.action.hash_policy
    assert found["outbound|80||hash.default.svc.cluster.local"] == (
        hashing.HashPolicy("cookie", "user", 60.0, "/"),)
    assert found["outbound|80||spread.default.svc.cluster.local"] == (
        hashing.HashPolicy("query_parameter", "user"),)
    assert found["outbound|80||pool.default.svc.cluster.local"] == ()


def test_endpoints_keep_priorities_and_locality_weights() -> None:
    state = accepted(types.ENDPOINT, generated(types.ENDPOINT))
    pool = {e.host: e for e in state.endpoints["outbound|80||pool.default.svc.cluster.local"]}
    # failover (outlier detection is on): the far one is a later priority, kept
    assert pool["10.1.0.1"].priority == 0 and pool["10.1.0.2"].priority > 0
    assert pool["10.1.0.2"].locality == "eu-west/eu-west-1a"
    # distribute: the same pods behind spread, weighted by locality
    weighted = accepted(types.ENDPOINT, generated(types.ENDPOINT, extra=PODS.replace(
        "app: pool", "app: spread").replace("name: near", "name: s-near").replace(
        "name: far", "name: s-far").replace("10.1.0.", "10.2.0.")))
    spread = {e.host: e for e in weighted.endpoints[
        "outbound|80||spread.default.svc.cluster.local"]}
    assert (spread["10.2.0.1"].locality_weight, spread["10.2.0.2"].locality_weight) == \
        (80, 20)


def test_tcp_routes_hash_on_the_source_when_istio_says_so() -> None:
    listeners = generated(types.LISTENER)
    state = accepted(types.LISTENER, {k: v for k, v in listeners.items()
                                      if k.endswith("_5432")})
    chains = [c for listener in state.listeners.values() for c in listener.chains]
    tcp = [c.network for c in chains
           if getattr(c.network, "cluster", "") == "outbound|5432||hash.default.svc.cluster.local"]
    assert tcp and all(n.hash_policy == (hashing.HashPolicy("source_ip"),)  # type: ignore[union-attr]
                       for n in tcp)


def _pool_with(policy: str) -> Any:
    extra = f"""\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: pool, namespace: default}}
spec:
  host: pool
  trafficPolicy: {{{policy}}}
"""
    return generated(types.CLUSTER, rules=extra)["outbound|80||pool.default.svc.cluster.local"]


def test_panic_keepalive_duration_warmup_and_retry_budget_are_read() -> None:
    name = "outbound|80||pool.default.svc.cluster.local"
    state = accepted(types.CLUSTER, {name: _pool_with(
        "outlierDetection: {consecutive5xxErrors: 1, minHealthPercent: 20}, "
        "connectionPool: {tcp: {tcpKeepalive: {probes: 3, time: 30s, interval: 5s}, "
        "maxConnectionDuration: 1m}}")})
    cluster = state.clusters[name]
    assert cluster.panic_threshold == 20.0 and cluster.max_connection_duration == 60.0
    assert cluster.keepalive == Keepalive(3, 30, 5)
    warm = accepted(types.CLUSTER, {name: _pool_with(
        "loadBalancer: {simple: LEAST_REQUEST, warmup: {duration: 10s, minimumPercent: 20, "
        "aggression: 2}}")})
    assert warm.clusters[name].slow_start == SlowStart(10.0, 2.0, 0.2)
    budget = accepted(types.CLUSTER, {name: _pool_with(
        "retryBudget: {percent: 25, minRetryConcurrency: 2}")})
    assert budget.clusters[name].limits.retry_budget == (25.0, 2)
    plain = accepted(types.CLUSTER, {name: _pool_with("loadBalancer: {simple: RANDOM}")})
    assert plain.clusters[name].panic_threshold == 50.0
