"""Clusters and endpoints as Istio names and shapes them."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import parse_node
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.testing.generators import generate as generated
from pilotfish.translators import cluster_policy

CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: reviews}
  ports: [{name: http, port: 9080}, {name: grpc-api, port: 9090}, {port: 7000}]
---
apiVersion: v1
kind: Pod
metadata: {name: r1, namespace: default, labels: {app: reviews, version: v1}}
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: r2, namespace: default, labels: {app: reviews, version: v2}}
status: {podIP: 10.1.0.2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool:
      tcp: {maxConnections: 7, connectTimeout: 250ms}
      http: {http1MaxPendingRequests: 3, maxRetries: 2, idleTimeout: 30s}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 1m}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 64}}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext, namespace: default}
spec:
  host: api.example.com
  trafficPolicy: {tls: {mode: SIMPLE}}
"""


def generate(type_url, proxy):
    objects, errors = load_text(CONFIG, "c.yaml")
    assert not errors
    push = push_context.build(objects, MeshSettings(), "v1")
    return {m.cluster_name if hasattr(m, "cluster_name") and not hasattr(m, "type") else m.name:
            m for m in generated(type_url, push, proxy)}


SIDECAR = parse_node("sidecar~10.1.0.1~r1.default~default.svc.cluster.local",
                     {"LABELS": {"app": "reviews", "version": "v1"}})
ROUTER = parse_node("router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local", {})


def test_cluster_names_and_fixed_clusters():
    clusters = generate(types.CLUSTER, SIDECAR)
    assert set(clusters) == {
        "outbound|9080||reviews.default.svc.cluster.local",
        "outbound|9080|v1|reviews.default.svc.cluster.local",
        "outbound|9080|v2|reviews.default.svc.cluster.local",
        "outbound|9090||reviews.default.svc.cluster.local",
        "outbound|9090|v1|reviews.default.svc.cluster.local",
        "outbound|9090|v2|reviews.default.svc.cluster.local",
        "outbound|7000||reviews.default.svc.cluster.local",
        "outbound|7000|v1|reviews.default.svc.cluster.local",
        "outbound|7000|v2|reviews.default.svc.cluster.local",
        "outbound|443||api.example.com",
        "BlackHoleCluster", "PassthroughCluster", "InboundPassthroughCluster",
        "inbound|9080||", "inbound|9090||", "inbound|7000||",
    }
    router = generate(types.CLUSTER, ROUTER)
    assert "PassthroughCluster" not in router and "inbound|9080||" not in router


def test_destination_rule_traffic_policy():
    clusters = generate(types.CLUSTER, SIDECAR)
    c = clusters["outbound|9080||reviews.default.svc.cluster.local"]
    assert c.type == cluster_pb2.Cluster.EDS
    assert c.eds_cluster_config.service_name == c.name
    assert c.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert c.connect_timeout.nanos == 250_000_000
    t = c.circuit_breakers.thresholds[0]
    assert (t.max_connections.value, t.max_pending_requests.value, t.max_retries.value) == (
        7, 3, 2)
    assert t.max_requests.value == 4294967295
    assert c.outlier_detection.consecutive_5xx.value == 5
    assert c.outlier_detection.base_ejection_time.seconds == 60
    assert c.outlier_detection.enforcing_success_rate.value == 0
    options = cluster_policy.http_options(c)
    assert options.common_http_protocol_options.idle_timeout.seconds == 30


def test_port_level_settings_and_http2():
    clusters = generate(types.CLUSTER, SIDECAR)
    c = clusters["outbound|9090||reviews.default.svc.cluster.local"]
    assert c.lb_policy == cluster_pb2.Cluster.RING_HASH
    assert c.ring_hash_lb_config.minimum_ring_size.value == 64
    assert cluster_policy.http_options(c).explicit_http_config.HasField("http2_protocol_options")
    # Auto-detected port on a sidecar follows the downstream protocol.
    auto = clusters["outbound|7000||reviews.default.svc.cluster.local"]
    assert cluster_policy.http_options(auto).HasField("use_downstream_protocol_config")


def test_subset_tls_istio_mutual_uses_agent_sds():
    clusters = generate(types.CLUSTER, SIDECAR)
    c = clusters["outbound|9080|v2|reviews.default.svc.cluster.local"]
    context = tls_pb2.UpstreamTlsContext()
    c.transport_socket.typed_config.Unpack(context)
    assert context.sni == "outbound_.9080_.v2_.reviews.default.svc.cluster.local"
    common = context.common_tls_context
    assert common.tls_certificate_sds_secret_configs[0].name == "default"
    assert common.combined_validation_context.validation_context_sds_secret_config.name == (
        "ROOTCA")
    assert not clusters["outbound|9080|v1|reviews.default.svc.cluster.local"].HasField(
        "transport_socket")


def test_dns_service_entry_with_simple_tls():
    clusters = generate(types.CLUSTER, SIDECAR)
    c = clusters["outbound|443||api.example.com"]
    assert c.type == cluster_pb2.Cluster.STRICT_DNS
    address = c.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (address.address, address.port_value) == ("api.example.com", 443)
    context = tls_pb2.UpstreamTlsContext()
    c.transport_socket.typed_config.Unpack(context)
    assert context.sni == "api.example.com"
    assert context.common_tls_context.validation_context.trusted_ca.filename


def test_inbound_cluster_is_original_dst_from_127_0_0_6():
    clusters = generate(types.CLUSTER, SIDECAR)
    c = clusters["inbound|9080||"]
    assert c.type == cluster_pb2.Cluster.ORIGINAL_DST
    assert c.upstream_bind_config.source_address.address == "127.0.0.6"


def test_endpoints_per_subset_are_filtered_by_labels():
    assignments = generate(types.ENDPOINT, SIDECAR)
    def addresses(name):
        cla = assignments[name]
        return sorted(lb.endpoint.address.socket_address.address
                      for group in cla.endpoints for lb in group.lb_endpoints)
    assert addresses("outbound|9080||reviews.default.svc.cluster.local") == [
        "10.1.0.1", "10.1.0.2"]
    assert addresses("outbound|9080|v1|reviews.default.svc.cluster.local") == ["10.1.0.1"]
    assert addresses("outbound|9080|v2|reviews.default.svc.cluster.local") == ["10.1.0.2"]
    assert "outbound|443||api.example.com" not in assignments  # DNS: inline endpoints


def test_assignments_are_shared_across_scopes_through_the_memo():
    objects, _ = load_text(CONFIG, "c.yaml")
    push = push_context.build(objects, MeshSettings(), "v1")
    memo: dict = {}
    a = generated(types.ENDPOINT, push, SIDECAR, memo)
    b = generated(types.ENDPOINT, push, ROUTER, memo)
    assert a[0] is b[0]
