"""CDS for waypoint proxies (entry point ``waypoint-cds``), the clusters istiod gives a
waypoint (their endpoints: `waypoint_endpoints`):

- ``main_internal``: the internal listener of the same name. ``connect_terminate`` sends
  every terminated CONNECT stream there, through the internal upstream transport so that
  the original destination and the client's identity travel along as filter state.
- ``inbound-vip|PORT|http|HOST`` (``tcp`` for TCP ports, both for undeclared ones) per port
  of every service bound to the waypoint (and of every service their routes send to: HTTP
  only), and ``inbound-vip|PORT|http/SUBSET|HOST`` per DestinationRule subset: EDS clusters
  whose endpoints are the service's pods, each an internal address on the
  internal listener ``connect_originate`` that carries the pod's ``IP:targetPort`` (endpoint
  metadata under ``envoy.filters.listener.original_dst``, key ``local``) and its SPIFFE ID
  (under ``tunnel``, key ``identity``) to that listener.
- ``encap``, when workloads are bound to the waypoint: traffic addressed to one of them
  goes straight to the internal listener ``connect_originate``.
- ``connect_originate``: ORIGINAL_DST, HTTP/2 over mTLS to port 15008 of the address the
  listener restored: the HBONE tunnel to the destination pod, with the waypoint's own
  certificate. The pod's SPIFFE ID is checked per connection (filter state
  ``envoy.network.upstream_subject_alt_names``, which ``connect_originate`` sets), on top of
  the mesh root and trust domain.

Sans-IO: a push context in, messages out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.transport_sockets.internal_upstream.v3 import (
    internal_upstream_pb2 as internal_pb2,
)
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.metadata.v3 import metadata_pb2

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.model import Endpoint, Service, ServicePort, labels_match
from pilotfish.core.protocol import Protocol
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.core.xds import types
from pilotfish.translators import cluster_policy
from pilotfish.translators.ambient.waypoint_scope import (
    KIND,
    bound_services,
    bound_workloads,
    route_destinations,
)
from pilotfish.translators.common import ads_config_source, duration, pack
from pilotfish.translators.inbound_tls import trust_domain_matcher
from pilotfish.translators.upstream_tls import (
    ROOT_SECRET,
    TLS_TRANSPORT_SOCKET,
    WORKLOAD_SECRET,
    agent_sds,
)

MAIN_INTERNAL = "main_internal"
ENCAP = "encap"
CONNECT_ORIGINATE = "connect_originate"
INBOUND_VIP = "inbound-vip"
HBONE_PORT = 15008
ORIGINAL_DST_METADATA = "envoy.filters.listener.original_dst"
TUNNEL_METADATA = "tunnel"
INTERNAL_UPSTREAM = "envoy.transport_sockets.internal_upstream"
HBONE_ALPN = "h2"


def vip_cluster_name(port: int, protocol: str, host: str, subset: str = "") -> str:
    """``inbound-vip|9080|http|reviews.ns.svc.cluster.local``, ``...|http/v1|...``."""
    kind = f"{protocol}/{subset}" if subset else protocol
    return f"{INBOUND_VIP}|{port}|{kind}|{host}"


def port_kinds(port: ServicePort) -> tuple[str, ...]:
    """How the waypoint may carry a port: ``http`` for a declared HTTP protocol, ``tcp`` for
    another declared one, both for a port without one (the waypoint sniffs it, as istiod's
    does, when the HTTP sniffer is active; see `waypoint_listeners`)."""
    if port.protocol.is_http:
        return ("http",)
    return ("tcp", "http") if port.protocol.is_unsupported else ("tcp",)


def served_ports(service: Service) -> list[ServicePort]:
    return [port for port in service.ports if port.protocol is not Protocol.UDP]


def internal_socket(*namespaces: str) -> base_pb2.TransportSocket:
    """The internal upstream transport: the host's metadata under ``namespaces`` becomes
    the internal connection's dynamic metadata; filter state shared with the upstream
    travels with it."""
    config = internal_pb2.InternalUpstreamTransport(
        transport_socket=base_pb2.TransportSocket(
            name="envoy.transport_sockets.raw_buffer",
            typed_config=pack(raw_buffer_pb2.RawBuffer())),
        passthrough_metadata=[
            internal_pb2.InternalUpstreamTransport.MetadataValueSource(
                kind=metadata_pb2.MetadataKind(host=metadata_pb2.MetadataKind.Host()),
                name=name)
            for name in namespaces
        ],
    )
    return base_pb2.TransportSocket(name=INTERNAL_UPSTREAM, typed_config=pack(config))


def internal_address(listener: str, endpoint_id: str = "") -> address_pb2.Address:
    return address_pb2.Address(envoy_internal_address=address_pb2.EnvoyInternalAddress(
        server_listener_name=listener, endpoint_id=endpoint_id))


def _internal_cluster(push: PushContext, name: str, listener: str) -> cluster_pb2.Cluster:
    """A static cluster whose one endpoint is the internal listener ``listener``."""
    cluster = cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration(push.mesh.connect_timeout),
        transport_socket=internal_socket(),
    )
    cluster.load_assignment.cluster_name = name
    cluster.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.CopyFrom(
        internal_address(listener))
    return cluster


def main_internal_cluster(push: PushContext) -> cluster_pb2.Cluster:
    return _internal_cluster(push, MAIN_INTERNAL, MAIN_INTERNAL)


def encap_cluster(push: PushContext) -> cluster_pb2.Cluster:
    """Traffic addressed to a workload: straight to ``connect_originate``, which restores the
    workload's address from the filter state ``main_internal`` shares."""
    return _internal_cluster(push, ENCAP, CONNECT_ORIGINATE)


def hbone_common_tls(trust_domain: str) -> tls_pb2.CommonTlsContext:
    """HBONE's TLS, either side: 1.3 only, the proxy's certificate over SDS, ALPN h2, the
    peer chaining to the mesh root and of the trust domain."""
    common = tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(
            tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
            tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3),
        tls_certificate_sds_secret_configs=[agent_sds(WORKLOAD_SECRET)],
        alpn_protocols=[HBONE_ALPN],
    )
    validation = common.combined_validation_context
    validation.default_validation_context.match_typed_subject_alt_names.append(
        trust_domain_matcher(trust_domain))
    validation.validation_context_sds_secret_config.CopyFrom(agent_sds(ROOT_SECRET))
    return common


def hbone_client_context(trust_domain: str) -> tls_pb2.UpstreamTlsContext:
    """mTLS 1.3 with the waypoint's certificate, ALPN h2, no SNI, no session resumption;
    the server must chain to the mesh root and be of the trust domain (its exact identity
    is checked per connection by the filter state the internal listener sets)."""
    context = tls_pb2.UpstreamTlsContext(common_tls_context=hbone_common_tls(trust_domain))
    context.max_session_keys.value = 0  # no resumption, as ztunnel's HBONE client
    return context


def connect_originate_cluster(push: PushContext) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=CONNECT_ORIGINATE, type=cluster_pb2.Cluster.ORIGINAL_DST,
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
        connect_timeout=duration(push.mesh.connect_timeout),
        cleanup_interval=duration(60),
        transport_socket=base_pb2.TransportSocket(
            name=TLS_TRANSPORT_SOCKET,
            typed_config=pack(hbone_client_context(push.mesh.trust_domain))),
    )
    # The restored destination is the pod's IP:targetPort; the tunnel goes to its 15008.
    cluster.original_dst_lb_config.upstream_port_override.value = HBONE_PORT
    cluster.circuit_breakers.thresholds.append(cluster_policy.default_thresholds())
    options = cluster_policy.http_options(cluster)
    options.explicit_http_config.http2_protocol_options.SetInParent()
    cluster_policy.set_http_options(cluster, options)
    return cluster


def _subsets(push: PushContext, proxy: Proxy, service: Service
             ) -> list[tuple[str, Mapping[str, str] | None, Any]]:
    rule = push.destination_rule(proxy, service.hostname)
    out: list[tuple[str, Mapping[str, str] | None, Any]] = [("", None, None)]
    for subset in rule.subsets if rule else ():
        if subset.get("name"):
            out.append((str(subset["name"]), subset.get("labels") or {},
                        subset.get("trafficPolicy") or {}))
    return out


def reached_services(push: PushContext, proxy: Proxy) -> list[tuple[Service, bool]]:
    """The services the waypoint sends to, each with whether it is reached only through
    HTTP routes (a backend of a bound service's routes, not bound itself)."""
    return ([(bound.service, False) for bound in bound_services(push, proxy)]
            + [(service, True) for service in route_destinations(push, proxy)])


def vip_clusters(push: PushContext, proxy: Proxy, service: Service, routed_only: bool
                 ) -> Iterator[tuple[str, ServicePort, Mapping[str, str] | None, Any]]:
    """(cluster name, port, subset labels, subset policy) of one service; subsets only for
    HTTP ports, where routes can name them; a service reached only through routes has HTTP
    clusters only."""
    subsets = _subsets(push, proxy, service)
    for port in served_ports(service):
        for kind in ("http",) if routed_only else port_kinds(port):
            for subset, labels, policy in subsets:
                if subset and kind != "http":
                    continue
                name = vip_cluster_name(port.port, kind, service.hostname, subset)
                yield name, port, labels, policy


def vip_cluster(push: PushContext, proxy: Proxy, service: Service, name: str,
                port: ServicePort, subset_policy: Any) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=name, alt_stat_name=f"{name};", type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration(push.mesh.connect_timeout),
        lb_policy=cluster_pb2.Cluster.LEAST_REQUEST,
        transport_socket=internal_socket(ORIGINAL_DST_METADATA, TUNNEL_METADATA),
    )
    cluster.eds_cluster_config.service_name = name
    cluster.eds_cluster_config.eds_config.CopyFrom(ads_config_source())
    cluster.circuit_breakers.thresholds.append(cluster_policy.default_thresholds())
    rule = push.destination_rule(proxy, service.hostname)
    policy = cluster_policy.effective_policy(rule.traffic_policy if rule else {},
                                             subset_policy, port.port)
    # TLS is the tunnel's business (connect_originate): the policy's tls does not apply.
    cluster_policy.apply(cluster, {k: v for k, v in policy.items() if k != "tls"},
                         port.protocol, host=service.hostname)
    cluster_policy.istio_metadata(cluster, {"services": [
        {"host": service.hostname, "name": service.name, "namespace": service.namespace}]})
    return cluster


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account or 'default'}"


def vip_assignment(push: PushContext, name: str, endpoints: list[Endpoint],
                   labels: Mapping[str, str] | None) -> endpoint_pb2.ClusterLoadAssignment:
    """The pods behind a cluster, each reached through ``connect_originate``."""
    lbs = []
    for endpoint in sorted(endpoints, key=lambda e: (e.address, e.port)):
        if labels and not labels_match(labels, endpoint.labels):
            continue
        target = f"{endpoint.address}:{endpoint.port}"
        lb = endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address=internal_address(CONNECT_ORIGINATE, target)))
        lb.load_balancing_weight.value = max(1, endpoint.weight)
        lb.metadata.filter_metadata[ORIGINAL_DST_METADATA].update({"local": target})
        lb.metadata.filter_metadata[TUNNEL_METADATA].update({
            "destination": target,
            "identity": spiffe_id(push.mesh.trust_domain, endpoint.namespace,
                                  endpoint.service_account)})
        lbs.append(lb)
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lbs)])


class WaypointClusters:
    """``main_internal``, ``connect_originate``, then the VIP clusters of the services the
    waypoint sends to."""

    type_url = types.CLUSTER
    proxy_kinds = frozenset({KIND})
    # Which services and workloads bind (their labels, the Gateway, namespaces), the
    # subsets, and the routes' destinations.
    depends_on = frozenset({"Service", "ServiceEntry", "DestinationRule", "Gateway", "GatewayClass",
                            "Namespace", "VirtualService", "HTTPRoute", "Pod",
                            "WorkloadEntry"})

    def generate(self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]
                 ) -> list[cluster_pb2.Cluster]:
        out = [main_internal_cluster(push), connect_originate_cluster(push)]
        if bound_workloads(push, proxy):
            out.append(encap_cluster(push))
        for service, routed_only in reached_services(push, proxy):
            for name, port, _, policy in vip_clusters(push, proxy, service, routed_only):
                out.append(vip_cluster(push, proxy, service, name, port, policy))
        return out


@hookimpl
def pilotfish_xds_generator() -> WaypointClusters:
    return WaypointClusters()
