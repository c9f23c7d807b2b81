"""LDS for waypoint proxies (entry point ``waypoint-lds``): the three listeners istiod gives
a waypoint.

- ``connect_terminate`` on 0.0.0.0:15008: HBONE in. mTLS 1.3 with the waypoint's own
  certificate (SDS ``default``, peers chained to ``ROOTCA`` and of the trust domain), ALPN
  h2, a client certificate required; an HTTP/2 connection manager that accepts CONNECT and
  routes it (``connect_matcher``) to ``main_internal``, after ``set_filter_state`` noted
  for the internal listener the CONNECT ``:authority`` (the service VIP:port ztunnel was
  asked for) as the original destination, the client's address as the source, the
  client's SPIFFE ID as ``io.istio.peer_principal`` and the waypoint's own as
  ``io.istio.local_principal``, all shared with the upstream.
- ``main_internal``, an internal listener: the original destination filter restores that
  VIP:port as the connection's local address, and a filter chain per (VIP, port) of each
  bound service takes it: on HTTP ports a connection manager routing by RDS
  (``inbound-vip|PORT|http|HOST``, see `waypoint_routes`) behind the RBAC filters of the
  AuthorizationPolicies that target the waypoint or the service; on TCP ports network
  RBAC and a tcp_proxy to ``inbound-vip|PORT|tcp|HOST``; on undeclared ports both, told
  apart by the HTTP inspector. A pod bound for workload traffic gets a ``direct-tcp|IP``
  chain (any port, L4 only) to ``encap``. The client is known by
  ``io.istio.peer_principal``, not by a certificate: this hop has no TLS, so the policies'
  peer matchers read that filter state instead.
- ``connect_originate``, an internal listener: every endpoint of a VIP cluster lands here
  with the pod's ``IP:targetPort`` restored as the local address and the pod's SPIFFE ID
  in its metadata; it asks the upstream TLS to verify that identity
  (``envoy.network.upstream_subject_alt_names``) and tunnels the bytes in a CONNECT to
  ``<podIP>:15008`` with ``:authority podIP:targetPort`` (tcp_proxy ``tunneling_config``
  over the ``connect_originate`` cluster).

Stock Envoy has Istio's filter state keys only as generic strings (factory
``envoy.string``). Sans-IO: a push context in, messages out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    protocol_pb2,
    substitution_format_string_pb2,
)
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.common.set_filter_state.v3 import value_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.http.set_filter_state.v3 import (
    set_filter_state_pb2 as http_state_pb2,
)
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.network.direct_response.v3 import config_pb2 as direct_response_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.filters.network.set_filter_state.v3 import (
    set_filter_state_pb2 as network_state_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.type.matcher.v3 import filter_state_pb2

from pilotfish.core.ambient.waypoints import Waypoint
from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.istio_metrics import LOCAL_PRINCIPAL, PEER_PRINCIPAL
from pilotfish.core.model import Workload
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.core.sniffing import HTTP_INSPECTOR, Sniffer
from pilotfish.core.xds import types
from pilotfish.translators.ambient.waypoint_clusters import (
    CONNECT_ORIGINATE,
    ENCAP,
    HBONE_PORT,
    MAIN_INTERNAL,
    TUNNEL_METADATA,
    hbone_common_tls,
    port_kinds,
    served_ports,
    spiffe_id,
    vip_cluster_name,
)
from pilotfish.translators.ambient.waypoint_scope import (
    KIND,
    Bound,
    bound_services,
    bound_workloads,
    policies_for,
    waypoint_of,
)
from pilotfish.translators.common import duration, pack
from pilotfish.translators.filter_chains import cidr, tcp_proxy
from pilotfish.translators.http_filters import HCM_FILTER, ROUTER_FILTER, http_connection_manager
from pilotfish.translators.listener_filters import ALL, Detection, listener_filter
from pilotfish.translators.rbac import (
    http_rbac_filters,
    network_rbac_filters,
)
from pilotfish.translators.upstream_tls import (
    TLS_TRANSPORT_SOCKET,
)

CONNECT_TERMINATE = "connect_terminate"
LOCAL_IP = "envoy.filters.listener.original_dst.local_ip"
REMOTE_IP = "envoy.filters.listener.original_dst.remote_ip"
UPSTREAM_SANS = "envoy.network.upstream_subject_alt_names"
STRING_FACTORY = "envoy.string"
ORIGINAL_DST_FILTER = "envoy.filters.listener.original_dst"
SET_FILTER_STATE_HTTP = "envoy.filters.http.set_filter_state"
SET_FILTER_STATE_NETWORK = "envoy.filters.network.set_filter_state"
DIRECT_RESPONSE = "envoy.filters.network.direct_response"
NO_SERVICE = "no-bound-service"
DIRECT_TCP = "direct-tcp"


def _state(key: str, format_string: str, factory: str = "", *,
           sharing: value_pb2.FilterStateValue.SharedWithUpstream.ValueType = (
               value_pb2.FilterStateValue.ONCE),
           skip_if_empty: bool = False) -> value_pb2.FilterStateValue:
    return value_pb2.FilterStateValue(
        object_key=key, factory_key=factory,
        format_string=substitution_format_string_pb2.SubstitutionFormatString(
            text_format_source=base_pb2.DataSource(inline_string=format_string),
            omit_empty_values=skip_if_empty),
        shared_with_upstream=sharing, skip_if_empty=skip_if_empty,
    )


def _original_dst() -> lc_pb2.ListenerFilter:
    return lc_pb2.ListenerFilter(name=ORIGINAL_DST_FILTER,
                                 typed_config=pack(original_dst_pb2.OriginalDst()))


def _internal(name: str) -> listener_pb2.Listener:
    listener = listener_pb2.Listener(name=name, listener_filters=[_original_dst()])
    listener.internal_listener.SetInParent()
    listener.use_original_dst.value = False
    return listener


def hbone_server_context(trust_domain: str) -> tls_pb2.DownstreamTlsContext:
    context = tls_pb2.DownstreamTlsContext(common_tls_context=hbone_common_tls(trust_domain))
    context.require_client_certificate.value = True
    return context


def connect_terminate(push: PushContext) -> listener_pb2.Listener:
    """HBONE in: CONNECT over mTLS, each stream handed to ``main_internal``."""
    route = rc.Route(match=rc.RouteMatch(connect_matcher=rc.RouteMatch.ConnectMatcher()),
                     route=rc.RouteAction(cluster=MAIN_INTERNAL, upgrade_configs=[
                         rc.RouteAction.UpgradeConfig(
                             upgrade_type="CONNECT",
                             connect_config=rc.RouteAction.UpgradeConfig.ConnectConfig())]))
    route.route.timeout.CopyFrom(duration(0))
    state = http_state_pb2.Config(on_request_headers=[
        _state(LOCAL_IP, "%REQ(:AUTHORITY)%"),
        _state(REMOTE_IP, "%DOWNSTREAM_REMOTE_ADDRESS%"),
        _state(PEER_PRINCIPAL, "%DOWNSTREAM_PEER_URI_SAN%", STRING_FACTORY),
        _state(LOCAL_PRINCIPAL, "%DOWNSTREAM_LOCAL_URI_SAN%", STRING_FACTORY),
    ])
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=CONNECT_TERMINATE,
        codec_type=hcm_pb2.HttpConnectionManager.HTTP2,
        http2_protocol_options=protocol_pb2.Http2ProtocolOptions(allow_connect=True),
        upgrade_configs=[hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type="CONNECT")],
        stream_idle_timeout=duration(0),
        route_config=route_pb2.RouteConfiguration(
            name=CONNECT_TERMINATE,
            virtual_hosts=[rc.VirtualHost(name=CONNECT_TERMINATE, domains=["*"],
                                          routes=[route])]),
        http_filters=[
            hcm_pb2.HttpFilter(name=SET_FILTER_STATE_HTTP, typed_config=pack(state)),
            hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router())),
        ],
    )
    listener = listener_pb2.Listener(
        name=CONNECT_TERMINATE, traffic_direction=base_pb2.INBOUND,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address="0.0.0.0", port_value=HBONE_PORT)),
        filter_chains=[lc_pb2.FilterChain(
            transport_socket=base_pb2.TransportSocket(
                name=TLS_TRANSPORT_SOCKET,
                typed_config=pack(hbone_server_context(push.mesh.trust_domain))),
            filters=[lc_pb2.Filter(name=HCM_FILTER, typed_config=pack(manager))],
        )],
    )
    # Few, long-lived tunnel connections, each carrying many streams: spread them evenly
    # over the workers rather than leave it to the kernel.
    listener.connection_balance_config.exact_balance.SetInParent()
    return listener


# -- the client's identity on the internal hop ---------------------------------------------

def peer_from_filter_state(principal: rbac_pb2.Principal) -> None:
    """Rewrite, in place, every match on the peer certificate (``authenticated``) into a
    match on ``io.istio.peer_principal``, which holds the HBONE client's SPIFFE ID."""
    which = principal.WhichOneof("identifier")
    if which == "authenticated":
        matcher = principal.authenticated.principal_name
        principal.filter_state.CopyFrom(filter_state_pb2.FilterStateMatcher(
            key=PEER_PRINCIPAL, string_match=matcher))
    elif which in ("and_ids", "or_ids"):
        for child in getattr(principal, which).ids:
            peer_from_filter_state(child)
    elif which == "not_id":
        peer_from_filter_state(principal.not_id)


def rewrite_rbac(rules: rbac_pb2.RBAC) -> None:
    """Every peer principal of ``rules``, in place, read from the filter state."""
    for policy in rules.policies.values():
        for principal in policy.principals:
            peer_from_filter_state(principal)


def peers_from_filter_state(item: Any) -> Any:
    """An RBAC filter (HTTP or network) with every peer principal of its rules and shadow
    rules read from the filter state; any other filter as it is."""
    for config in (http_rbac_pb2.RBAC(), network_rbac_pb2.RBAC()):
        if item.typed_config.Is(config.DESCRIPTOR):
            item.typed_config.Unpack(config)
            rewrite_rbac(config.rules)
            rewrite_rbac(config.shadow_rules)
            return type(item)(name=item.name, typed_config=pack(config))
    return item


def waypoint_http_rbac(policies: Sequence[Any]) -> list[hcm_pb2.HttpFilter]:
    return [peers_from_filter_state(item) for item in http_rbac_filters(policies)]


def waypoint_network_rbac(policies: Sequence[Any]) -> list[lc_pb2.Filter]:
    return [peers_from_filter_state(item) for item in network_rbac_filters(policies)]


# -- main_internal and connect_originate ---------------------------------------------------

def _service_chains(push: PushContext, waypoint: Waypoint, bound: Bound,
                    detection: Detection) -> Iterable[tuple[lc_pb2.FilterChain, bool]]:
    """The chains of one bound service, each with whether it is a sniffed HTTP chain."""
    policies = policies_for(push, waypoint, bound.service)
    for port in served_ports(bound.service):
        kinds = port_kinds(port)
        sniffed = len(kinds) > 1 and detection.sniffs(port.port)
        if len(kinds) > 1 and not sniffed:
            kinds = ("tcp",)  # undeclared and not sniffed: bytes only
        for kind in kinds:
            name = vip_cluster_name(port.port, kind, bound.service.hostname)
            if kind == "http":
                filters = [http_connection_manager(name, rds=name,
                                                   auth_filters=waypoint_http_rbac(policies))]
            else:
                filters = [*waypoint_network_rbac(policies), tcp_proxy(name, stat_prefix=name)]
            match = lc_pb2.FilterChainMatch(destination_port={"value": port.port})
            match.prefix_ranges.extend(r for r in (cidr(vip) for vip in bound.vips) if r)
            if sniffed and kind == "http":
                match.application_protocols.extend(detection.http_alpn)
            yield (lc_pb2.FilterChain(name=name, filter_chain_match=match, filters=filters),
                   sniffed and kind == "http")


def _workload_chain(push: PushContext, waypoint: Waypoint,
                    workload: Workload) -> lc_pb2.FilterChain:
    """Traffic addressed to a bound workload, any port: the waypoint's own policies at L4,
    then the bytes to ``encap``, with the workload's address and SPIFFE ID noted for
    ``connect_originate`` (the address for its listener, the identity for the TLS of its
    upstream, hence shared all the way)."""
    state = network_state_pb2.Config(on_new_connection=[
        _state(LOCAL_IP, "%DOWNSTREAM_LOCAL_ADDRESS%"),
        _state(UPSTREAM_SANS, spiffe_id(push.mesh.trust_domain, workload.namespace,
                                        workload.service_account),
               sharing=value_pb2.FilterStateValue.TRANSITIVE),
    ])
    match = lc_pb2.FilterChainMatch()
    match.prefix_ranges.extend(r for r in [cidr(workload.address)] if r)
    return lc_pb2.FilterChain(
        name=f"{DIRECT_TCP}|{workload.address}", filter_chain_match=match, filters=[
            lc_pb2.Filter(name=SET_FILTER_STATE_NETWORK, typed_config=pack(state)),
            *waypoint_network_rbac(policies_for(push, waypoint, None)),
            tcp_proxy(ENCAP, stat_prefix=ENCAP)])


def main_internal(push: PushContext, proxy: Proxy, detection: Detection = ALL
                  ) -> listener_pb2.Listener:
    """A tunnel to an address no chain takes (a service not bound here) lands on the
    default chain, which closes it; the waypoint may have no service yet, and Envoy wants
    some chain. The HTTP inspector runs only on the ports it sniffs: it would hold a
    server-first protocol's connection waiting for the client to speak."""
    listener = _internal(MAIN_INTERNAL)
    listener.traffic_direction = base_pb2.INBOUND
    listener.default_filter_chain.CopyFrom(lc_pb2.FilterChain(
        name=NO_SERVICE, filters=[lc_pb2.Filter(
            name=DIRECT_RESPONSE, typed_config=pack(direct_response_pb2.Config()))]))
    waypoint = waypoint_of(push, proxy)
    if waypoint is None:
        return listener
    sniffed_ports: set[int] = set()
    for bound in bound_services(push, proxy):
        for chain, sniffed in _service_chains(push, waypoint, bound, detection):
            listener.filter_chains.append(chain)
            if sniffed:
                sniffed_ports.add(chain.filter_chain_match.destination_port.value)
    if sniffed_ports:
        others = {c.filter_chain_match.destination_port.value
                  for c in listener.filter_chains} - sniffed_ports
        listener.listener_filters.append(listener_filter(HTTP_INSPECTOR, skip_ports=others))
    listener.filter_chains.extend(_workload_chain(push, waypoint, workload)
                                  for workload in bound_workloads(push, proxy))
    return listener


def connect_originate() -> listener_pb2.Listener:
    """HBONE out: the bytes of one upstream connection, in a CONNECT to the pod."""
    # From the endpoint's metadata (a service's pod); traffic through ``encap`` has none and
    # brings the identity in the filter state instead, which an empty value must not erase.
    sans = network_state_pb2.Config(on_new_connection=[
        _state(UPSTREAM_SANS, f"%DYNAMIC_METADATA({TUNNEL_METADATA}:identity)%",
               skip_if_empty=True)])
    tunnel = tcp_proxy(CONNECT_ORIGINATE, stat_prefix=CONNECT_ORIGINATE)
    config = tcp_proxy_pb2.TcpProxy()
    tunnel.typed_config.Unpack(config)
    config.tunneling_config.hostname = "%DOWNSTREAM_LOCAL_ADDRESS%"
    tunnel.typed_config.CopyFrom(pack(config))
    listener = _internal(CONNECT_ORIGINATE)
    listener.filter_chains.append(lc_pb2.FilterChain(filters=[
        lc_pb2.Filter(name=SET_FILTER_STATE_NETWORK, typed_config=pack(sans)), tunnel]))
    return listener


class WaypointListeners:
    """connect_terminate, main_internal, connect_originate. ``detection``: what the active
    sniffers let ``main_internal`` tell apart on undeclared ports (group
    ``pilotfish.sniffers``, as for sidecars)."""

    type_url = types.LISTENER
    proxy_kinds = frozenset({KIND})
    depends_on = frozenset({"Service", "ServiceEntry", "Gateway", "GatewayClass", "Namespace",
                            "AuthorizationPolicy"})

    def __init__(self, detection: Detection = ALL) -> None:
        self.detection = detection  # fixed: the plugin set does not change while it runs

    def generate(self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]
                 ) -> list[listener_pb2.Listener]:
        return [connect_terminate(push), main_internal(push, proxy, self.detection),
                connect_originate()]


@hookimpl
def pilotfish_xds_generator(sniffers: Sequence[Sniffer]) -> WaypointListeners:
    return WaypointListeners(Detection.of(sniffers))
