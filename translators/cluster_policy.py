"""DestinationRule traffic policy → Envoy cluster fields.

The effective policy for a cluster is the rule's top-level ``trafficPolicy``, overridden by
the ``portLevelSettings`` entry for the cluster's port, then by the subset's own policy
(and its port-level entry). Each section (loadBalancer, connectionPool, outlierDetection,
tls) replaces the one below it as a whole, as in Istio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import wrappers_pb2

from pilotfish.core.meshconfig import parse_duration
from pilotfish.core.protocol import Protocol
from pilotfish.translators import upstream_tls
from pilotfish.translators.common import MAX_UINT32, duration, istio_duration, pack

HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_SECTIONS = ("loadBalancer", "connectionPool", "outlierDetection", "tls", "tunnel",
             "proxyProtocol", "retryBudget")

Policy = Mapping[str, Any]


def _port_level(policy: Policy, port: int) -> Policy:
    for entry in policy.get("portLevelSettings") or ():
        if int((entry.get("port") or {}).get("number") or 0) == port:
            return entry
    return {}


def _overlay(base: Policy, top: Policy) -> dict[str, Any]:
    out = {k: v for k, v in base.items() if k in _SECTIONS}
    out.update({k: v for k, v in top.items() if k in _SECTIONS})
    return out


def effective_policy(rule_policy: Policy, subset_policy: Policy | None, port: int) -> Policy:
    """The traffic policy that applies to one cluster (port, optional subset)."""
    policy = _overlay(rule_policy, _port_level(rule_policy, port))
    if subset_policy:
        policy = _overlay(policy, _overlay(subset_policy, _port_level(subset_policy, port)))
    return policy


def default_thresholds() -> circuit_breaker_pb2.CircuitBreakers.Thresholds:
    return circuit_breaker_pb2.CircuitBreakers.Thresholds(
        max_connections=wrappers_pb2.UInt32Value(value=MAX_UINT32),
        max_pending_requests=wrappers_pb2.UInt32Value(value=MAX_UINT32),
        max_requests=wrappers_pb2.UInt32Value(value=MAX_UINT32),
        max_retries=wrappers_pb2.UInt32Value(value=MAX_UINT32),
        track_remaining=True,
    )


def http_options(cluster: cluster_pb2.Cluster) -> http_protocol_options_pb2.HttpProtocolOptions:
    """The cluster's HttpProtocolOptions (decoded, to be edited and re-packed)."""
    options = http_protocol_options_pb2.HttpProtocolOptions()
    packed = cluster.typed_extension_protocol_options.get(HTTP_OPTIONS_KEY)
    if packed is not None:
        packed.Unpack(options)
    return options


def set_http_options(
    cluster: cluster_pb2.Cluster, options: http_protocol_options_pb2.HttpProtocolOptions
) -> None:
    """Store the options. Envoy requires an upstream protocol in them: HTTP/1.1 (its
    default without options) unless one was chosen."""
    if options.WhichOneof("upstream_protocol_options") is None:
        options.explicit_http_config.http_protocol_options.SetInParent()
    cluster.typed_extension_protocol_options[HTTP_OPTIONS_KEY].CopyFrom(pack(options))


def set_protocol(cluster: cluster_pb2.Cluster, protocol: Protocol, sniffed: bool) -> None:
    """HTTP/2 upstreams for h2/gRPC ports; follow the downstream protocol for sniffed ports."""
    if protocol.is_http2:
        options = http_options(cluster)
        options.explicit_http_config.http2_protocol_options.SetInParent()
        set_http_options(cluster, options)
    elif sniffed:
        options = http_options(cluster)
        options.use_downstream_protocol_config.http_protocol_options.SetInParent()
        options.use_downstream_protocol_config.http2_protocol_options.SetInParent()
        set_http_options(cluster, options)


def apply(
    cluster: cluster_pb2.Cluster, policy: Policy, protocol: Protocol, *, inbound: bool = False,
    host: str = "", istio_sni: str = "", sans: list[str] | None = None,
) -> None:
    """Apply an effective traffic policy to a cluster built with Istio's defaults."""
    connection_pool = policy.get("connectionPool") or {}
    if connection_pool:
        _connection_pool(cluster, connection_pool, protocol)
    if inbound:
        return  # inbound clusters take only connection limits (no LB, outlier or TLS)
    _load_balancer(cluster, policy.get("loadBalancer") or {})
    outlier = policy.get("outlierDetection")
    if outlier:
        _outlier_detection(cluster, outlier)
    budget = policy.get("retryBudget")
    if budget is not None:
        thresholds = cluster.circuit_breakers.thresholds[0]
        thresholds.retry_budget.budget_percent.value = float(budget.get("percent", 20.0))
        thresholds.retry_budget.min_retry_concurrency.value = int(
            budget.get("minRetryConcurrency", 3)
        )
    tls = policy.get("tls")
    if tls:
        upstream_tls.apply(cluster, tls, protocol, host=host, istio_sni=istio_sni, sans=sans)


def _connection_pool(cluster: cluster_pb2.Cluster, pool: Policy, protocol: Protocol) -> None:
    thresholds = cluster.circuit_breakers.thresholds[0]
    tcp = pool.get("tcp") or {}
    http = pool.get("http") or {}
    if "maxConnections" in tcp:
        thresholds.max_connections.value = int(tcp["maxConnections"])
    if "connectTimeout" in tcp:
        cluster.connect_timeout.CopyFrom(istio_duration(tcp["connectTimeout"]))
    keepalive = tcp.get("tcpKeepalive")
    if keepalive is not None:
        options = cluster.upstream_connection_options.tcp_keepalive
        options.SetInParent()
        if "probes" in keepalive:
            options.keepalive_probes.value = int(keepalive["probes"])
        if "time" in keepalive:
            options.keepalive_time.value = int(parse_duration(keepalive["time"]))
        if "interval" in keepalive:
            options.keepalive_interval.value = int(parse_duration(keepalive["interval"]))
    if "http1MaxPendingRequests" in http:
        thresholds.max_pending_requests.value = int(http["http1MaxPendingRequests"])
    if "http2MaxRequests" in http:
        thresholds.max_requests.value = int(http["http2MaxRequests"])
    if "maxRetries" in http:
        thresholds.max_retries.value = int(http["maxRetries"])

    common = protocol_pb2.HttpProtocolOptions()
    idle = http.get("idleTimeout") or tcp.get("idleTimeout")
    if idle:
        common.idle_timeout.CopyFrom(istio_duration(idle))
    if "maxConnectionDuration" in tcp:
        common.max_connection_duration.CopyFrom(istio_duration(tcp["maxConnectionDuration"]))
    if http.get("maxRequestsPerConnection"):
        common.max_requests_per_connection.value = int(http["maxRequestsPerConnection"])
    upgrade = http.get("h2UpgradePolicy") == "UPGRADE" and protocol.is_http
    use_client = bool(http.get("useClientProtocol"))
    if common.ByteSize() or upgrade or use_client or http.get("maxConcurrentStreams"):
        options = http_options(cluster)
        if common.ByteSize():
            options.common_http_protocol_options.MergeFrom(common)
        if use_client:
            options.ClearField("explicit_http_config")
            options.use_downstream_protocol_config.http_protocol_options.SetInParent()
            options.use_downstream_protocol_config.http2_protocol_options.SetInParent()
        elif upgrade:
            options.explicit_http_config.http2_protocol_options.SetInParent()
        if http.get("maxConcurrentStreams") and options.explicit_http_config.HasField(
            "http2_protocol_options"
        ):
            options.explicit_http_config.http2_protocol_options.max_concurrent_streams.value = (
                int(http["maxConcurrentStreams"])
            )
        set_http_options(cluster, options)


_SIMPLE_LB = {
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_CONN": cluster_pb2.Cluster.LEAST_REQUEST,
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "RANDOM": cluster_pb2.Cluster.RANDOM,
    "UNSPECIFIED": cluster_pb2.Cluster.LEAST_REQUEST,
}


def _load_balancer(cluster: cluster_pb2.Cluster, lb: Policy) -> None:
    simple = lb.get("simple")
    if simple == "PASSTHROUGH":
        cluster.type = cluster_pb2.Cluster.ORIGINAL_DST
        cluster.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
        cluster.ClearField("eds_cluster_config")
        cluster.ClearField("load_assignment")
        return
    if simple in _SIMPLE_LB:
        cluster.lb_policy = _SIMPLE_LB[simple]
    hashing = lb.get("consistentHash")
    if hashing:
        # The hash key itself goes on the route (RDS); the cluster picks the ring.
        maglev = hashing.get("maglev")
        if maglev is not None:
            cluster.lb_policy = cluster_pb2.Cluster.MAGLEV
            if maglev.get("tableSize"):
                cluster.maglev_lb_config.table_size.value = int(maglev["tableSize"])
        else:
            cluster.lb_policy = cluster_pb2.Cluster.RING_HASH
            ring = hashing.get("ringHash") or {}
            size = ring.get("minimumRingSize") or hashing.get("minimumRingSize")
            if size:
                cluster.ring_hash_lb_config.minimum_ring_size.value = int(size)
    warmup = lb.get("warmup")
    window = (warmup or {}).get("duration") or lb.get("warmupDurationSecs")
    if window and cluster.lb_policy in (
        cluster_pb2.Cluster.ROUND_ROBIN, cluster_pb2.Cluster.LEAST_REQUEST
    ):
        config = (
            cluster.round_robin_lb_config if cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
            else cluster.least_request_lb_config
        ).slow_start_config
        config.slow_start_window.CopyFrom(istio_duration(window))
        if warmup:
            config.min_weight_percent.value = float(warmup.get("minimumPercent", 10.0))
            config.aggression.default_value = float(warmup.get("aggression", 1.0))
            config.aggression.runtime_key = "upstream.slow_start.aggression"


def _outlier_detection(cluster: cluster_pb2.Cluster, outlier: Policy) -> None:
    od = outlier_detection_pb2.OutlierDetection(
        enforcing_success_rate=wrappers_pb2.UInt32Value(value=0)
    )
    consecutive = outlier.get("consecutive5xxErrors", outlier.get("consecutiveErrors"))
    if consecutive is not None:
        value = int(consecutive)
        od.consecutive_5xx.value = value
        od.enforcing_consecutive_5xx.value = 100 if value else 0
    else:
        od.enforcing_consecutive_5xx.value = 0
    if outlier.get("consecutiveGatewayErrors") is not None:
        value = int(outlier["consecutiveGatewayErrors"])
        od.consecutive_gateway_failure.value = value
        od.enforcing_consecutive_gateway_failure.value = 100 if value else 0
    if outlier.get("interval"):
        od.interval.CopyFrom(istio_duration(outlier["interval"]))
    if outlier.get("baseEjectionTime"):
        od.base_ejection_time.CopyFrom(istio_duration(outlier["baseEjectionTime"]))
    if outlier.get("maxEjectionPercent") is not None:
        od.max_ejection_percent.value = int(outlier["maxEjectionPercent"])
    if outlier.get("splitExternalLocalOriginErrors"):
        od.split_external_local_origin_errors = True
        if outlier.get("consecutiveLocalOriginFailures") is not None:
            od.consecutive_local_origin_failure.value = int(
                outlier["consecutiveLocalOriginFailures"]
            )
            od.enforcing_consecutive_local_origin_failure.value = 100
        od.enforcing_local_origin_success_rate.value = 0
    cluster.outlier_detection.CopyFrom(od)
    if outlier.get("minHealthPercent") is not None:
        cluster.common_lb_config.healthy_panic_threshold.value = float(
            outlier["minHealthPercent"]
        )


def inbound_bind(cluster: cluster_pb2.Cluster, source: str) -> None:
    cluster.upstream_bind_config.CopyFrom(address_pb2.BindConfig(
        source_address=address_pb2.SocketAddress(address=source, port_value=0)
    ))


def istio_metadata(cluster: cluster_pb2.Cluster, fields: Mapping[str, Any]) -> None:
    """``metadata.filter_metadata.istio``: which config and service produced the cluster."""
    meta = base_pb2.Metadata()
    meta.filter_metadata["istio"].update(dict(fields))
    cluster.metadata.MergeFrom(meta)


def connect_timeout(seconds: float) -> Any:
    return duration(seconds)
