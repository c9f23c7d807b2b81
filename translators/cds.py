"""CDS: Istio's clusters for a proxy.

Outbound: one cluster per visible service port (``outbound|PORT||HOST``) plus one per
DestinationRule subset (``outbound|PORT|SUBSET|HOST``). Then ``BlackHoleCluster``; for
sidecars also ``PassthroughCluster``, the inbound clusters of the workload's own service
ports (``inbound|TARGETPORT||``) and ``InboundPassthroughCluster``.

Outbound clusters to sidecar-backed services choose mesh mTLS per endpoint (`auto_mtls`)
unless a DestinationRule sets ``tls``. Sidecars' and gateways' clusters to services with
ambient pods also reach those over HBONE (`hbone_outbound`: a socket match and
``connect_originate``); a sidecar that takes HBONE itself gets ``main_internal``
(`hbone_inbound`).

A router with an AUTO_PASSTHROUGH Gateway server also gets each outbound cluster under its
SNI name (``outbound_.PORT_.SUBSET_.HOST``, "SNI-DNAT"), the name its listener's
``sni_cluster`` filter picks from the client's SNI: the same endpoints and policy, without
TLS origination, as the client's own (m)TLS passes through to the destination.
"""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.model import Resolution, Service, ServicePort
from pilotfish.core.protocol import Protocol
from pilotfish.core.protocol import parse as parse_protocol
from pilotfish.core.proxy import Proxy, ProxyType
from pilotfish.core.push_context import (
    HBONE_ENDPOINTS,
    SERVICE_IDENTITIES,
    IngressListener,
    PushContext,
    ServiceInstance,
)
from pilotfish.core.xds import types
from pilotfish.translators import (
    auto_mtls,
    cluster_policy,
    hbone_inbound,
    hbone_outbound,
    locality_lb,
)
from pilotfish.translators.common import (
    BLACKHOLE_CLUSTER,
    INBOUND,
    INBOUND_PASSTHROUGH_CLUSTER,
    INBOUND_SOURCE_ADDRESS,
    OUTBOUND,
    PASSTHROUGH_CLUSTER,
    ads_config_source,
    cluster_name,
    duration,
    parse_cluster_name,
    sni_name,
)
from pilotfish.translators.endpoints import socket_address

_DISCOVERY = {
    Resolution.CLIENT_SIDE_LB: cluster_pb2.Cluster.EDS,
    Resolution.DNS_LB: cluster_pb2.Cluster.STRICT_DNS,
    Resolution.DNS_ROUND_ROBIN_LB: cluster_pb2.Cluster.LOGICAL_DNS,
    Resolution.PASSTHROUGH: cluster_pb2.Cluster.ORIGINAL_DST,
}


class _Clusters:
    type_url = types.CLUSTER
    # Workloads reach clusters only through the mTLS SANs (the service accounts behind a
    # service) and whether any has a sidecar: the pseudo kind SERVICE_IDENTITIES moves when
    # those change, so endpoint churn alone still leaves CDS untouched. PeerAuthentication
    # decides whether clients may use mTLS at all (a namespace or the mesh in DISABLE).
    # HBONE_ENDPOINTS: which services have a pod that takes HBONE (`hbone_outbound`).
    depends_on = frozenset({"Service", "ServiceEntry", "DestinationRule", "Sidecar",
                            "PeerAuthentication", SERVICE_IDENTITIES, HBONE_ENDPOINTS})

    def outbound(self, push: PushContext, proxy: Proxy) -> list[cluster_pb2.Cluster]:
        clusters: list[cluster_pb2.Cluster] = []
        for service in push.visible_services(proxy):
            if service.resolution is Resolution.ALIAS:
                continue  # ExternalName: routes point at the target service's cluster
            for port in service.ports:
                if port.protocol is Protocol.UDP:
                    continue
                clusters.extend(outbound_clusters(push, proxy, service, port))
        clusters.append(blackhole())
        return clusters


class SidecarClusters(_Clusters):
    """A sidecar's clusters: outbound, then passthrough and its inbound clusters."""

    proxy_kinds = frozenset({"sidecar"})

    def generate(self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]) -> list[Any]:
        clusters = self.outbound(push, proxy)
        clusters.append(passthrough(push))
        ingress = push.ingress_listeners(proxy)
        if ingress:  # a Sidecar's ingress listeners replace the services' ports
            clusters += [ingress_cluster(push, listener) for listener in ingress]
        else:
            clusters += [inbound_cluster(push, i) for i in push.service_instances(proxy)]
        clusters.append(inbound_passthrough(push))
        clusters += hbone_outbound.clusters(push, push.visible_services(proxy))
        clusters += hbone_inbound.clusters(push, proxy)
        return _unique(clusters)


class RouterClusters(_Clusters):
    """A gateway's clusters: outbound only (and their SNI-DNAT twins, if a Gateway has
    AUTO_PASSTHROUGH)."""

    proxy_kinds = frozenset({"router"})
    depends_on = _Clusters.depends_on | {"Gateway"}

    def generate(self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]) -> list[Any]:
        clusters = self.outbound(push, proxy)
        if auto_passthrough(push, proxy):
            clusters += [sni_dnat(c) for c in clusters if c.name.startswith(f"{OUTBOUND}|")]
        clusters += hbone_outbound.clusters(push, push.visible_services(proxy))
        return _unique(clusters)


def _unique(clusters: list[cluster_pb2.Cluster]) -> list[cluster_pb2.Cluster]:
    seen: set[str] = set()
    out = []
    for cluster in clusters:
        if cluster.name not in seen:
            seen.add(cluster.name)
            out.append(cluster)
    return out


def _base(name: str, push: PushContext) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=name,
        alt_stat_name=f"{name};",
        connect_timeout=duration(push.mesh.connect_timeout),
        lb_policy=cluster_pb2.Cluster.LEAST_REQUEST,
    )
    cluster.circuit_breakers.CopyFrom(circuit_breaker_pb2.CircuitBreakers(
        thresholds=[cluster_policy.default_thresholds()]
    ))
    return cluster


def outbound_clusters(
    push: PushContext, proxy: Proxy, service: Service, port: ServicePort
) -> list[cluster_pb2.Cluster]:
    rule = push.destination_rule(proxy, service.hostname)
    rule_policy = rule.traffic_policy if rule else {}
    out = [_outbound(push, proxy, service, port, "", rule_policy, None, rule)]
    for subset in rule.subsets if rule else ():
        name = str(subset.get("name") or "")
        if name:
            out.append(_outbound(push, proxy, service, port, name, rule_policy,
                                 subset.get("trafficPolicy") or {}, rule))
    return out


def auto_passthrough(push: PushContext, proxy: Proxy) -> bool:
    """Does a Gateway server on this router pass connections to the cluster their SNI
    names?"""
    return any(str((server.tls or {}).get("mode") or "").upper() == "AUTO_PASSTHROUGH"
               for gateway in push.gateways_for(proxy) for server in gateway.servers)


def sni_dnat(cluster: cluster_pb2.Cluster) -> cluster_pb2.Cluster:
    """An outbound cluster under its SNI name, passing TLS through: same endpoints (EDS
    still asks for ``outbound|...``) and policy, no TLS of its own."""
    parsed = parse_cluster_name(cluster.name)
    assert parsed is not None
    _, port, subset, host = parsed
    out = cluster_pb2.Cluster()
    out.CopyFrom(cluster)
    out.name = sni_name(port, subset, host)
    out.alt_stat_name = f"{out.name};"
    out.ClearField("transport_socket")
    out.ClearField("transport_socket_matches")
    out.typed_extension_protocol_options.clear()  # bytes pass through: no HTTP upstream
    return out


def _outbound(
    push: PushContext, proxy: Proxy, service: Service, port: ServicePort, subset: str,
    rule_policy: Any, subset_policy: Any, rule: Any,
) -> cluster_pb2.Cluster:
    name = cluster_name(OUTBOUND, port.port, subset, service.hostname)
    cluster = _base(name, push)
    resolution = service.resolution
    if resolution is Resolution.PASSTHROUGH and proxy.type is not ProxyType.SIDECAR:
        resolution = Resolution.CLIENT_SIDE_LB  # routers have no original destination
    cluster.type = _DISCOVERY.get(resolution, cluster_pb2.Cluster.EDS)
    if cluster.type == cluster_pb2.Cluster.EDS:
        cluster.eds_cluster_config.service_name = name
        cluster.eds_cluster_config.eds_config.CopyFrom(ads_config_source())
    elif cluster.type == cluster_pb2.Cluster.ORIGINAL_DST:
        cluster.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    else:  # DNS: endpoints are inline and resolved by Envoy
        cluster.dns_refresh_rate.CopyFrom(duration(60))
        cluster.respect_dns_ttl = True
        cluster.dns_lookup_family = cluster_pb2.Cluster.V4_ONLY
        cluster.load_assignment.CopyFrom(_dns_assignment(push, name, service, port))
    cluster_policy.set_protocol(
        cluster, port.protocol,
        sniffed=port.protocol.is_unsupported and proxy.type is ProxyType.SIDECAR,
    )
    policy = cluster_policy.effective_policy(rule_policy, subset_policy, port.port)
    sni = sni_name(port.port, subset, service.hostname)
    cluster_policy.apply(
        cluster, policy, port.protocol, host=service.hostname, istio_sni=sni,
        sans=list(push.service_identities(service.hostname)),
    )
    auto_mtls.apply(cluster, push, service, port.protocol, policy, sni)
    hbone_outbound.apply(cluster, push, service, policy)
    locality_lb.cluster_config(cluster, locality_lb.setting(push, policy))
    metadata: dict[str, Any] = {
        "services": [{"host": service.hostname, "name": service.name,
                      "namespace": service.namespace}],
    }
    if subset:
        metadata["subset"] = subset
    if rule is not None:
        metadata["config"] = rule.config_path
    if service.mesh_external:
        metadata["external"] = True
    cluster_policy.istio_metadata(cluster, metadata)
    return cluster


def _dns_assignment(
    push: PushContext, name: str, service: Service, port: ServicePort
) -> endpoint_pb2.ClusterLoadAssignment:
    endpoints = [
        endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address=socket_address(ep.address, ep.port)
            )
        )
        for ep in push.endpoints(service.hostname, port.port)
    ]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=endpoints)],
    )


def blackhole() -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=BLACKHOLE_CLUSTER,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration(10),
    )


def _original_dst(name: str, push: PushContext) -> cluster_pb2.Cluster:
    cluster = _base(name, push)
    cluster.alt_stat_name = ""
    cluster.type = cluster_pb2.Cluster.ORIGINAL_DST
    cluster.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    return cluster


def passthrough(push: PushContext) -> cluster_pb2.Cluster:
    cluster = _original_dst(PASSTHROUGH_CLUSTER, push)
    options = cluster_policy.http_options(cluster)
    options.common_http_protocol_options.idle_timeout.CopyFrom(duration(300))
    options.use_downstream_protocol_config.http_protocol_options.SetInParent()
    options.use_downstream_protocol_config.http2_protocol_options.SetInParent()
    cluster_policy.set_http_options(cluster, options)
    return cluster


def inbound_passthrough(push: PushContext) -> cluster_pb2.Cluster:
    cluster = _original_dst(INBOUND_PASSTHROUGH_CLUSTER, push)
    cluster_policy.inbound_bind(cluster, INBOUND_SOURCE_ADDRESS)
    return cluster


def inbound_cluster(push: PushContext, instance: ServiceInstance) -> cluster_pb2.Cluster:
    """``inbound|PORT||``: to the app on its own IP (sourced from 127.0.0.6 so iptables lets
    it through), or to 127.0.0.1 when the mesh's inbound policy is LOCALHOST."""
    name = cluster_name(INBOUND, instance.target_port)
    if push.mesh.inbound_traffic_policy == "LOCALHOST":
        cluster = _base(name, push)
        cluster.type = cluster_pb2.Cluster.STATIC
        cluster.load_assignment.CopyFrom(endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
                endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
                    address=socket_address("127.0.0.1", instance.target_port)
                ))
            ])],
        ))
    else:
        cluster = _original_dst(name, push)
        cluster.alt_stat_name = f"{name};"
        cluster_policy.inbound_bind(cluster, INBOUND_SOURCE_ADDRESS)
    cluster_policy.set_protocol(cluster, instance.port.protocol, sniffed=False)
    cluster_policy.istio_metadata(cluster, {"services": [{
        "host": instance.service.hostname, "name": instance.service.name,
        "namespace": instance.service.namespace,
    }]})
    return cluster


def ingress_cluster(push: PushContext, listener: IngressListener) -> cluster_pb2.Cluster:
    """``inbound|PORT||`` for a Sidecar ingress listener, to its ``defaultEndpoint``:
    ``127.0.0.1:P`` (loopback), ``0.0.0.0:P`` (the workload's own address, the port
    replaced, sourced from 127.0.0.6) or a unix socket."""
    name = cluster_name(INBOUND, listener.port)
    if listener.address == "0.0.0.0":
        cluster = _original_dst(name, push)
        cluster.alt_stat_name = f"{name};"
        cluster.original_dst_lb_config.upstream_port_override.value = listener.target_port
        cluster_policy.inbound_bind(cluster, INBOUND_SOURCE_ADDRESS)
    else:
        cluster = _base(name, push)
        cluster.type = cluster_pb2.Cluster.STATIC
        address = (f"unix://{listener.unix_path}" if listener.unix_path
                   else listener.address)
        cluster.load_assignment.CopyFrom(endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
                endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
                    address=socket_address(address, listener.target_port)))])],
        ))
    protocol = parse_protocol(listener.protocol)
    cluster_policy.set_protocol(cluster, protocol, sniffed=False)
    if listener.connection_pool:
        cluster_policy.apply(cluster, {"connectionPool": listener.connection_pool}, protocol,
                             inbound=True)
    return cluster


@hookimpl
def pilotfish_xds_generator() -> list[_Clusters]:
    return [SidecarClusters(), RouterClusters()]
