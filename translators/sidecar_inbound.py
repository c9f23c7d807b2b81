"""A sidecar's ``virtualInbound`` listener (15006), where iptables sends inbound traffic.

One listener serves every port: ``original_dst`` restores the port the client dialled and
filter chains match on it. Each service port of the workload gets chains named
``0.0.0.0_<targetPort>`` leading to ``inbound|<targetPort>||``; unknown ports fall through
to the passthrough chains, which forward to the original destination from 127.0.0.6.

Which chains a port gets depends on its protocol, on what the active sniffers can tell
apart, and on the workload's PeerAuthentication mode for that port (`peer_authn`); chains
that terminate mesh mTLS carry the server side of the mesh TLS scheme (`inbound_tls`).
The passthrough chains follow the workload's mode, and a ``portLevelMtls`` port no service
declares gets passthrough chains of its own in that port's mode. Every chain carries the
workload's authorization: JWT and RBAC filters in the HTTP connection manager, network
RBAC before ``tcp_proxy`` (`rbac`).

Inspectors run per destination port: each is switched off (``filter_disabled``) on the
ports where no chain needs it, so declared HTTP and TCP ports are not sniffed in DISABLE
or STRICT mode, and neither are the well-known server-first ports (MySQL, SMTP, ...) no
service declares: there the passthrough chains take the bytes as plaintext TCP at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2

from pilotfish.core.protocol import SERVER_FIRST_PORTS, Protocol
from pilotfish.core.protocol import parse as parse_protocol
from pilotfish.core.proxy import TPROXY, Proxy
from pilotfish.core.push_context import IngressListener, PushContext
from pilotfish.core.security_policies import MtlsMode
from pilotfish.core.sniffing import HTTP_INSPECTOR, TLS_INSPECTOR
from pilotfish.translators import inbound_tls
from pilotfish.translators.authz import AuthFilters, auth_filters
from pilotfish.translators.common import (
    BLACKHOLE_CLUSTER,
    INBOUND,
    INBOUND_PASSTHROUGH_CLUSTER,
    INBOUND_PORT,
    VIRTUAL_INBOUND,
    cluster_name,
    duration,
)
from pilotfish.translators.filter_chains import (
    chain_match,
    filter_chain,
    socket_address,
    tcp_proxy,
)
from pilotfish.translators.gateway_tls import GatewayTlsError, server_tls, transport_socket
from pilotfish.translators.http_filters import http_connection_manager
from pilotfish.translators.listener_filters import (
    ALL,
    ORIGINAL_DST,
    Detection,
    inspectors_for,
    listener_filter,
    original_src,
)
from pilotfish.translators.peer_authn import (
    ChainOption,
    PortKind,
    chain_options,
    port_kind,
    served_mode,
)
from pilotfish.translators.sidecar_outbound import RESERVED_PORTS, WILDCARD

log = logging.getLogger("pilotfish.lds")


def port_chains(
    port: int | None,
    kind: PortKind,
    mode: MtlsMode,
    *,
    http: Callable[[], lc_pb2.Filter],
    tcp: Callable[[], lc_pb2.Filter],
    names: tuple[str, str],
    detection: Detection = ALL,
    trust_domain: str = "cluster.local",
    tcp_guards: Sequence[lc_pb2.Filter] = (),
) -> list[lc_pb2.FilterChain]:
    """The chains for one destination port (None: any port) in one mode.

    ``names`` are the (HTTP, TCP) chain names; ``http``/``tcp`` build the terminal filter,
    ``tcp_guards`` go before ``tcp`` (network RBAC). Chains that terminate mesh mTLS get
    the mesh's server TLS context, which admits peers of ``trust_domain`` only.
    """
    out = []
    for option in chain_options(kind, mode, detection):
        filters = [http()] if option.http else [*tcp_guards, tcp()]
        chain = filter_chain(
            names[0] if option.http else names[1],
            chain_match(destination_port=port, transport=option.transport, alpn=option.alpn),
            *filters,
        )
        if option.mtls:
            chain.transport_socket.CopyFrom(
                inbound_tls.transport_socket(trust_domain, http=option.http)
            )
        out.append(chain)
    return out


def _inbound_route(name: str, vhost: str, cluster: str) -> route_pb2.RouteConfiguration:
    """A one-route table to the local app: no retries or timeouts, the caller owns those."""
    action = rc_pb2.RouteAction(cluster=cluster, timeout=duration(0))
    action.max_stream_duration.max_stream_duration.CopyFrom(duration(0))
    action.max_stream_duration.grpc_timeout_header_max.CopyFrom(duration(0))
    route = rc_pb2.Route(name="default", match=rc_pb2.RouteMatch(prefix="/"), route=action)
    table = route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[rc_pb2.VirtualHost(name=vhost, domains=["*"], routes=[route])],
    )
    table.validate_clusters.value = False
    return table


def _http(stat_prefix: str, route_name: str, vhost: str, cluster: str,
          auth: AuthFilters) -> lc_pb2.Filter:
    return http_connection_manager(
        stat_prefix, route_config=_inbound_route(route_name, vhost, cluster),
        auth_filters=auth.http,
    )


class _Inspectors:
    """Which destination ports each inspector must run on, as chains are added."""

    def __init__(self) -> None:
        self.used: list[ChainOption] = []
        self.tls: set[int] = set()  # ports whose own chains need it
        self.http: set[int] = set()
        self.declared: set[int] = set()

    def add(self, port: int | None, options: Sequence[ChainOption]) -> None:
        self.used += options
        if port is None:
            return
        self.declared.add(port)
        if any(o.needs_tls_inspector for o in options):
            self.tls.add(port)
        if any(o.needs_http_inspector for o in options):
            self.http.add(port)

    def filters(self) -> list[lc_pb2.ListenerFilter]:
        # Off on the loop guard, on ports whose chains decide nothing with it, and on the
        # server-first ports no one declared (the catch-all then takes them as plaintext).
        quiet = {INBOUND_PORT} | (set(SERVER_FIRST_PORTS) - self.declared)
        out = [listener_filter(ORIGINAL_DST)]
        if any(o.needs_tls_inspector for o in self.used):
            out.append(listener_filter(TLS_INSPECTOR, quiet | (self.declared - self.tls)))
        if any(o.needs_http_inspector for o in self.used):
            out.append(listener_filter(HTTP_INSPECTOR, quiet | (self.declared - self.http)))
        return out


def _ingress_tls_chain(name: str, port: int, kind: PortKind, listener: IngressListener,
                       http: Callable[[], lc_pb2.Filter], cluster: str, auth: AuthFilters
                       ) -> lc_pb2.FilterChain | None:
    """A Sidecar ingress port with its own ``tls``: terminated with those certificates, in
    place of mesh mTLS (as Istio), then HTTP or TCP to the app."""
    where = f"Sidecar ingress port {port}"
    is_http = kind is PortKind.HTTP
    try:
        tls = transport_socket(server_tls(listener.tls, where, http=is_http))
    except GatewayTlsError as error:
        log.warning("%s; skipped", error)
        return None
    terminal = [http()] if is_http else [*auth.tcp, tcp_proxy(cluster)]
    chain = filter_chain(name, chain_match(destination_port=port), *terminal)
    chain.transport_socket.CopyFrom(tls)
    return chain


def ingress_listeners(push: PushContext, proxy: Proxy) -> list[listener_pb2.Listener]:
    """Sidecar ingress listeners with ``captureMode: NONE`` or a ``bind``: listeners of
    their own, bound on ``bind`` (every address when unset) and the port, which the app's
    clients dial without iptables."""
    auth = auth_filters(push, proxy)
    out = []
    for listener in push.ingress_listeners(proxy):
        if listener.capture != "NONE" and not listener.bind:
            continue
        address = listener.bind or WILDCARD
        name, cluster = f"{address}_{listener.port}", cluster_name(INBOUND, listener.port)
        kind = PortKind.HTTP if parse_protocol(listener.protocol).is_http else PortKind.TCP
        http = partial(_http, f"inbound_{name}", cluster, f"{INBOUND}|http|{listener.port}",
                       cluster, auth)
        if listener.tls:
            chain = _ingress_tls_chain(name, listener.port, kind, listener, http, cluster,
                                       auth)
            chains = [chain] if chain is not None else []
        else:
            terminal = [http()] if kind is PortKind.HTTP else [*auth.tcp, tcp_proxy(cluster)]
            chains = [filter_chain(name, None, *terminal)]
        if chains:
            out.append(listener_pb2.Listener(
                name=name, address=socket_address(address, listener.port),
                traffic_direction=base_pb2.INBOUND, filter_chains=chains,
                listener_filters=inspectors_for(chains)))
    return out


def virtual_inbound(
    push: PushContext, proxy: Proxy, detection: Detection = ALL, *,
    mode: MtlsMode | None = None, auth: AuthFilters | None = None,
) -> listener_pb2.Listener:
    """``mode`` replaces the workload's PeerAuthentication mode on every port and ``auth``
    its filters: the chains behind HBONE (`hbone_inbound`) are plaintext, and read the
    client's identity from the tunnel."""
    policy = push.mtls_policy(proxy)
    if auth is None:
        auth = auth_filters(push, proxy)
    chains = [filter_chain(f"{VIRTUAL_INBOUND}-blackhole",
                           chain_match(destination_port=INBOUND_PORT),
                           tcp_proxy(BLACKHOLE_CLUSTER))]
    inspectors = _Inspectors()
    common = partial(port_chains, detection=detection, trust_domain=push.mesh.trust_domain,
                     tcp_guards=auth.tcp)
    ingress = push.ingress_listeners(proxy)
    # A Sidecar's ingress listeners replace the ports the workload's services give.
    ports = [(i.port, parse_protocol(i.protocol), f"Sidecar ingress port {i.port}", i)
             for i in ingress if i.capture != "NONE" and not i.bind] if ingress else [
        (i.target_port, i.port.protocol, f"inbound {i.service.hostname}", None)
        for i in push.service_instances(proxy)]
    for port, protocol, where, listener in ports:
        kind = port_kind(protocol, port, detection)
        if kind is None or port in inspectors.declared:
            continue
        if port in RESERVED_PORTS:
            log.warning("%s: target port %d belongs to the proxy; skipped", where, port)
            continue
        name, cluster = f"{WILDCARD}_{port}", cluster_name(INBOUND, port)
        http = partial(_http, f"inbound_{name}", cluster, f"{INBOUND}|http|{port}", cluster,
                       auth)
        if listener is not None and listener.tls:
            chain = _ingress_tls_chain(name, port, kind, listener, http, cluster, auth)
            if chain is not None:
                inspectors.add(port, [])
                chains.append(chain)
            continue
        port_mode = mode or policy.for_port(port)
        inspectors.add(port, chain_options(kind, port_mode, detection))
        chains += common(port, kind, port_mode, names=(name, name), http=http,
                         tcp=partial(tcp_proxy, cluster))
    passthrough = partial(
        common, names=(f"{VIRTUAL_INBOUND}-catchall-http", VIRTUAL_INBOUND),
        http=partial(_http, VIRTUAL_INBOUND, INBOUND_PASSTHROUGH_CLUSTER, f"{INBOUND}|http|0",
                     INBOUND_PASSTHROUGH_CLUSTER, auth),
        tcp=partial(tcp_proxy, INBOUND_PASSTHROUGH_CLUSTER),
    )
    # A port-level mode for a port no service declares: passthrough chains of its own.
    for port, port_mode in sorted(policy.ports.items()) if mode is None else ():
        kind = port_kind(Protocol.UNSUPPORTED, port, detection)
        if port in inspectors.declared or port in RESERVED_PORTS or kind is None:
            continue
        if served_mode(port_mode, detection) is served_mode(policy.mode, detection):
            continue  # the catch-all already serves it so
        inspectors.add(port, chain_options(kind, port_mode, detection))
        chains += passthrough(port, kind, port_mode)
    inspectors.add(None, chain_options(PortKind.AUTO, mode or policy.mode, detection))
    chains += passthrough(None, PortKind.AUTO, mode or policy.mode)
    listener = listener_pb2.Listener(
        name=VIRTUAL_INBOUND,
        address=socket_address(WILDCARD, INBOUND_PORT),
        traffic_direction=base_pb2.INBOUND,
        listener_filters=inspectors.filters(),
        listener_filters_timeout=duration(push.mesh.protocol_detection_timeout),
        continue_on_listener_filters_timeout=True,
        filter_chains=chains,
    )
    if proxy.scope.interception_mode == TPROXY:
        # As Istio: TPROXY hands the proxy connections still addressed to the pod, which
        # only a transparent socket accepts; original_src (right after original_dst) then
        # connects to the app from the client's own address, which is TPROXY's point.
        listener.transparent.value = True
        listener.listener_filters.insert(1, original_src())
    return listener
