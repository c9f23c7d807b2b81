"""A router's listeners: the Gateway servers that select it, merged by port.

Every (bind address, port) becomes one bound listener ``<bind>_<port>`` (``0.0.0.0_443``).
The servers on it must agree on how a connection is told apart:

- plaintext HTTP servers share one HCM with RDS ``http.<port>``;
- TLS servers get one chain each, chosen by SNI: terminated HTTPS → HCM with RDS
  ``https.<port>.<portName>.<gateway>.<namespace>``, terminated TLS → tcp_proxy from
  VirtualService ``tcp[]`` routes, PASSTHROUGH → tcp_proxy chains per ``tls[]`` route,
  AUTO_PASSTHROUGH → one chain whose ``sni_cluster`` filter sends each connection to the
  cluster its SNI names (``outbound_.<port>_.<subset>_.<host>``, built by CDS for routers
  with such a server), no VirtualService needed;
- a TCP server takes the whole port, from ``tcp[]`` routes.

A server whose kind differs from the first one on its port is skipped and logged (Istio
reports the same as a conflict). Telling TLS servers apart by SNI takes the TLS inspector:
with the ``tls`` sniffer removed from the mesh config, the first TLS server on a port takes
every connection and the others are skipped as conflicts.

In file mode there is no gateway Service to translate the server port through, so the
server port is the port the listener binds.

AuthorizationPolicies and RequestAuthentications selecting the gateway guard every chain:
JWT and HTTP RBAC in the connection managers, network RBAC before each ``tcp_proxy``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence

import attrs
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.sni_cluster.v3 import sni_cluster_pb2

from pilotfish.core import protocol
from pilotfish.core.model import host_matches
from pilotfish.core.protocol import Protocol
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import GatewayServer, PushContext, VirtualService
from pilotfish.translators.authz import AuthFilters, auth_filters
from pilotfish.translators.common import BLACKHOLE_CLUSTER, pack
from pilotfish.translators.filter_chains import (
    chain_match,
    filter_chain,
    sni_names,
    socket_address,
    tcp_proxy,
)
from pilotfish.translators.gateway_tls import (
    GatewayTlsError,
    downstream_tls,
    terminates_tls,
    tls_mode,
    transport_socket,
)
from pilotfish.translators.http_filters import http_connection_manager
from pilotfish.translators.listener_filters import ALL, Detection, inspectors_for
from pilotfish.translators.sidecar_outbound import RESERVED_PORTS, WILDCARD
from pilotfish.translators.tcp_routes import RouteContext, l4_proxy, tcp_route, tls_routes

log = logging.getLogger("pilotfish.lds")

SNI_CLUSTER_FILTER = "envoy.filters.network.sni_cluster"


class Role(enum.Enum):
    """What a server does with a connection; HTTP, TLS and TCP roles cannot share a port."""

    HTTP = "HTTP"
    HTTPS = "HTTPS"  # terminate TLS, then HTTP
    TLS_TERMINATE = "TLS"  # terminate TLS, then TCP routes
    PASSTHROUGH = "PASSTHROUGH"  # route on SNI, bytes untouched
    AUTO_PASSTHROUGH = "AUTO_PASSTHROUGH"  # the SNI names the cluster, bytes untouched
    TCP = "TCP"

    @property
    def family(self) -> str:
        return {Role.HTTP: "HTTP", Role.TCP: "TCP"}.get(self, "TLS")


def server_role(server: GatewayServer) -> Role | None:
    proto, mode = protocol.parse(server.protocol), tls_mode(server)
    if proto.is_http:
        return Role.HTTP
    if proto is Protocol.HTTPS and server.tls.get("httpsRedirect") and not terminates_tls(server):
        return Role.HTTP
    if proto in (Protocol.HTTPS, Protocol.TLS):
        if mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH"):
            return Role(mode)
        if terminates_tls(server):
            return Role.HTTPS if proto is Protocol.HTTPS else Role.TLS_TERMINATE
        return None
    return Role.TCP if proto.is_tcp else None


def https_route_name(server: GatewayServer) -> str:
    gw = server.gateway
    return f"https.{server.port}.{server.port_name}.{gw.name}.{gw.namespace}"


def _host_entries(server: GatewayServer) -> list[tuple[str, str]]:
    """``ns/host`` entries as (namespace, host); a bare host admits every namespace."""
    out = []
    for entry in server.hosts:
        ns, _, host = entry.rpartition("/")
        out.append((server.gateway.namespace if ns == "." else ns or "*", host))
    return out


def server_names(server: GatewayServer) -> tuple[str, ...]:
    """SNI names for a server's chain; none (any name) if it serves ``*``."""
    return sni_names(host for _, host in _host_entries(server))


def _bound_to(vss: Sequence[VirtualService], server: GatewayServer) -> list[VirtualService]:
    """VirtualServices whose namespace and hosts a server admits."""
    entries = _host_entries(server)
    return [
        vs for vs in vss
        if any(ns in ("*", vs.namespace)
               and any(host_matches(host, h) or host_matches(h, host) for h in vs.hosts)
               for ns, host in entries)
    ]


@attrs.define
class _Port:
    address: str
    port: int
    family: str
    sni: bool = True  # may chains match on SNI (is the TLS inspector allowed)?
    servers: list[tuple[GatewayServer, Role]] = attrs.Factory(list)
    claimed: set[str] = attrs.Factory(set)  # SNI names taken; "" is the no-SNI chain

    def claim(self, names: Sequence[str]) -> tuple[str, ...] | None:
        """Names not taken by an earlier chain (Envoy rejects duplicate matches); () when
        the chain matches any name."""
        names = sni_names(names)
        if not names or not self.sni:
            if "" in self.claimed:
                return None
            self.claimed.add("")
            return ()
        free = tuple(n for n in names if n not in self.claimed)
        self.claimed.update(free)
        return free or None


def _group(push: PushContext, proxy: Proxy, detection: Detection) -> list[_Port]:
    ports: dict[tuple[str, int], _Port] = {}
    for gateway in push.gateways_for(proxy):
        for server in gateway.servers:
            where = f"Gateway {gateway.ref} server {server.index} (port {server.port})"
            role = server_role(server)
            if role is None:
                log.warning("%s: protocol %s with tls.mode %s is not supported; skipped",
                            where, server.protocol, tls_mode(server))
                continue
            if server.bind.startswith("unix://") or server.port in RESERVED_PORTS:
                log.warning("%s: cannot listen there (bind %r); skipped", where, server.bind)
                continue
            key = (server.bind or WILDCARD, server.port)
            group = ports.setdefault(key, _Port(key[0], key[1], role.family, detection.tls))
            if group.family != role.family or (role is Role.TCP and group.servers):
                log.warning("%s: %s conflicts with the %s server(s) already on the port; "
                            "skipped", where, server.protocol, group.family)
                continue
            group.servers.append((server, role))
    return sorted(ports.values(), key=lambda group: (group.port, group.address))


@attrs.frozen
class _Server:
    """One server being translated, with what its chains need to know."""

    server: GatewayServer
    role: Role
    vss: list[VirtualService]
    routes: RouteContext
    auth: AuthFilters

    @property
    def where(self) -> str:
        server = self.server
        return f"Gateway {server.gateway.ref} server {server.index} (port {server.port})"


def _passthrough(s: _Server, group: _Port) -> list[lc_pb2.FilterChain]:
    hosts = [host for _, host in _host_entries(s.server)]
    chains = []
    for route in tls_routes(s.vss, s.routes, lambda sni: any(host_matches(h, sni) for h in hosts)):
        names = group.claim(route.sni_hosts)
        if names is not None:
            chains.append(filter_chain(f"passthrough.{group.port}",
                                       chain_match(server_names=names),
                                       *s.auth.tcp, route.proxy))
    return chains


def _auto_passthrough(s: _Server, group: _Port) -> lc_pb2.FilterChain | None:
    names = group.claim(server_names(s.server))
    if names is None:
        log.warning("%s: its hosts are all served by earlier servers; skipped", s.where)
        return None
    sni_cluster = lc_pb2.Filter(name=SNI_CLUSTER_FILTER,
                                typed_config=pack(sni_cluster_pb2.SniCluster()))
    # The transport match keeps the TLS inspector on when the server takes any name.
    return filter_chain(f"auto_passthrough.{group.port}",
                        chain_match(server_names=names, transport="tls"),
                        *s.auth.tcp, sni_cluster, tcp_proxy(BLACKHOLE_CLUSTER))


def _terminated(s: _Server, group: _Port, stat_prefix: str) -> lc_pb2.FilterChain | None:
    if s.role is Role.HTTPS:
        name = https_route_name(s.server)
        terminals = [http_connection_manager(stat_prefix, rds=name, use_remote_address=True,
                                             auth_filters=s.auth.http)]
    else:
        routes = tcp_route(s.vss, s.routes)
        if routes is None:
            log.warning("%s: no VirtualService tcp route for it; skipped", s.where)
            return None
        name = f"tls.{group.port}.{s.server.port_name}"
        terminals = [*s.auth.tcp, l4_proxy(s.routes, routes)]
    try:
        tls = transport_socket(downstream_tls(s.server, http=s.role is Role.HTTPS))
    except GatewayTlsError as error:
        log.warning("%s; skipped", error)
        return None
    names = group.claim(server_names(s.server))
    if names is None:
        log.warning("%s: its hosts are all served by earlier servers; skipped", s.where)
        return None
    chain = filter_chain(name, chain_match(server_names=names), *terminals)
    chain.transport_socket.CopyFrom(tls)
    return chain


def _chains(push: PushContext, proxy: Proxy, group: _Port, auth: AuthFilters
            ) -> list[lc_pb2.FilterChain]:
    port = group.port
    stat_prefix = f"outbound_{WILDCARD}_{port}"
    if group.family == "HTTP":
        hcm = http_connection_manager(stat_prefix, rds=f"http.{port}", use_remote_address=True,
                                      auth_filters=auth.http)
        return [filter_chain(f"http.{port}", None, hcm)]
    chains: list[lc_pb2.FilterChain] = []
    for server, role in group.servers:
        ref = server.gateway.ref
        s = _Server(server, role, _bound_to(push.virtual_services_for(proxy, ref), server),
                    RouteContext(push, proxy, ref, port), auth)
        if role is Role.TCP:
            routes = tcp_route(s.vss, s.routes)
            if routes is None:
                log.warning("%s: no VirtualService tcp route for it; skipped", s.where)
            else:
                chains.append(filter_chain(f"tcp.{port}", None, *auth.tcp,
                                           l4_proxy(s.routes, routes)))
        elif role is Role.PASSTHROUGH:
            chains += _passthrough(s, group)
        else:
            chain = (_auto_passthrough(s, group) if role is Role.AUTO_PASSTHROUGH
                     else _terminated(s, group, stat_prefix))
            if chain is not None:
                chains.append(chain)
    return chains


def gateway_listeners(
    push: PushContext, proxy: Proxy, detection: Detection = ALL
) -> list[listener_pb2.Listener]:
    out = []
    # AuthorizationPolicy and RequestAuthentication selecting the gateway's own workload.
    auth = auth_filters(push, proxy)
    for group in _group(push, proxy, detection):
        chains = _chains(push, proxy, group, auth)
        name = f"{group.address}_{group.port}"
        if not chains:
            log.warning("gateway listener %s: no server produced a filter chain; skipped", name)
            continue
        out.append(listener_pb2.Listener(
            name=name,
            address=socket_address(group.address, group.port),
            filter_chains=chains,
            traffic_direction=base_pb2.OUTBOUND,
            listener_filters=inspectors_for(chains),
        ))
    return out
