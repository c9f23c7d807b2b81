"""CDS for proxyless gRPC (plugin ``grpc-cds``): EDS clusters with the load balancer gRPC has.

One cluster per served service port and one per DestinationRule subset, with Istio's names.
gRPC's client accepts round robin, least request and ring hash only: a ``consistentHash``
(ring hash or Maglev) becomes ring hash, ``LEAST_REQUEST`` stays, anything else is round
robin. Connection pools, outlier detection and TLS settings are not sent: gRPC applies
none of Envoy's forms of them (mTLS to sidecars needs gRPC's xDS credentials, not done).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.core.xds import types
from pilotfish.translators.cluster_policy import effective_policy
from pilotfish.translators.common import OUTBOUND, ads_config_source, cluster_name
from pilotfish.translators.grpc.common import KIND, served


def eds_cluster(name: str, policy: Mapping[str, Any]) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    cluster.eds_cluster_config.service_name = name
    cluster.eds_cluster_config.eds_config.CopyFrom(ads_config_source())
    lb = policy.get("loadBalancer") or {}
    hashing = lb.get("consistentHash")
    if hashing:
        cluster.lb_policy = cluster_pb2.Cluster.RING_HASH
        ring = hashing.get("ringHash") or {}
        size = ring.get("minimumRingSize") or hashing.get("minimumRingSize")
        if size:
            cluster.ring_hash_lb_config.minimum_ring_size.value = int(size)
    elif lb.get("simple") == "LEAST_REQUEST":
        cluster.lb_policy = cluster_pb2.Cluster.LEAST_REQUEST
    else:
        cluster.lb_policy = cluster_pb2.Cluster.ROUND_ROBIN
    return cluster


class GrpcClusters:
    type_url = types.CLUSTER
    proxy_kinds = frozenset({KIND})
    depends_on = frozenset({"Service", "ServiceEntry", "DestinationRule", "Sidecar"})

    def generate(
        self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]
    ) -> list[cluster_pb2.Cluster]:
        out = []
        for service, port in served(push, proxy):
            rule = push.destination_rule(proxy, service.hostname)
            rule_policy = rule.traffic_policy if rule else {}
            name = cluster_name(OUTBOUND, port.port, "", service.hostname)
            out.append(eds_cluster(name, effective_policy(rule_policy, None, port.port)))
            for subset in rule.subsets if rule else ():
                subset_name = str(subset.get("name") or "")
                if subset_name:
                    policy = effective_policy(rule_policy, subset.get("trafficPolicy") or {},
                                              port.port)
                    out.append(eds_cluster(
                        cluster_name(OUTBOUND, port.port, subset_name, service.hostname),
                        policy))
        return out


@hookimpl
def pilotfish_xds_generator() -> GrpcClusters:
    return GrpcClusters()
