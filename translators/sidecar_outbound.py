"""A sidecar's outbound listeners: ``virtualOutbound`` and one listener per port or VIP.

iptables sends every outbound connection to 15001; ``virtualOutbound`` hands it to the
listener whose address matches the original destination (``use_original_dst``), so the
per-port listeners never bind. Which listener a service port lands in follows its protocol:

- HTTP ports share ``0.0.0.0_P``, an HCM routing by Host with RDS ``"P"``;
- auto-detect ports join the same listener: sniffed HTTP goes to RDS ``"P"``, raw bytes to
  a VIP go to that service's cluster (chains matching the VIP as a prefix);
- TCP-family ports with a VIP get ``<VIP>_P``, a tcp_proxy (VirtualService ``tcp[]`` and,
  for TLS, SNI-matched ``tls[]`` routes apply); without a VIP they become a chain of
  ``0.0.0.0_P`` (by SNI for TLS, else the port's catch-all).

Whatever no chain takes goes to the default chain: PassthroughCluster with ALLOW_ANY,
BlackHoleCluster with REGISTRY_ONLY.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import attrs
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.listener.v3 import listener_pb2

from pilotfish.core.model import Resolution, Service, host_matches
from pilotfish.core.protocol import Protocol
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import MESH_GATEWAY, PushContext, VirtualService
from pilotfish.translators.common import (
    BLACKHOLE_CLUSTER,
    OUTBOUND,
    OUTBOUND_PORT,
    PASSTHROUGH_CLUSTER,
    VIRTUAL_OUTBOUND,
    cluster_name,
    duration,
)
from pilotfish.translators.filter_chains import (
    chain_match,
    filter_chain,
    inspectors_for,
    sniffed_chains,
    socket_address,
    tcp_proxy,
)
from pilotfish.translators.http_filters import http_connection_manager
from pilotfish.translators.tcp_routes import RouteContext, TlsRoute, tcp_route, tls_routes

log = logging.getLogger("pilotfish.lds")

WILDCARD = "0.0.0.0"
# The proxy's own ports: a wildcard listener there would collide with the capture or
# bootstrap listeners (Envoy refuses two listeners on one address).
RESERVED_PORTS = frozenset({15000, 15001, 15004, 15006, 15008, 15020, 15021, 15053, 15090})


def fallback_cluster(policy: str) -> str:
    return BLACKHOLE_CLUSTER if policy == "REGISTRY_ONLY" else PASSTHROUGH_CLUSTER


def virtual_outbound(policy: str) -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=VIRTUAL_OUTBOUND,
        address=socket_address(WILDCARD, OUTBOUND_PORT),
        use_original_dst={"value": True},
        traffic_direction=base_pb2.OUTBOUND,
        filter_chains=[
            # A connection made to 15001 itself would loop back into this listener forever.
            filter_chain(f"{VIRTUAL_OUTBOUND}-blackhole",
                         chain_match(destination_port=OUTBOUND_PORT),
                         tcp_proxy(BLACKHOLE_CLUSTER)),
            filter_chain(f"{VIRTUAL_OUTBOUND}-catchall-tcp", None,
                         tcp_proxy(fallback_cluster(policy))),
        ],
    )


@attrs.define
class _PortPlan:
    """Every visible service port with one number, sorted into the listeners it needs."""

    number: int
    http: bool = False  # the wildcard listener carries an HCM (HTTP or auto-detect ports)
    sniffed: list[tuple[str, Service]] = attrs.Factory(list)  # (address, auto-detect service)
    prefixed: list[tuple[str, Service]] = attrs.Factory(list)  # (CIDR, TCP service)
    unaddressed: list[Service] = attrs.Factory(list)  # TCP services without an address
    vips: dict[str, Service] = attrs.Factory(dict)  # VIP → TCP service


def _plan(services: Sequence[Service]) -> dict[int, _PortPlan]:
    plans: dict[int, _PortPlan] = {}
    for service in services:
        if service.resolution is Resolution.ALIAS:
            continue  # ExternalName: no listener of its own (RDS points at the target)
        for port in service.ports:
            if port.protocol is Protocol.UDP:
                continue
            plan = plans.setdefault(port.port, _PortPlan(port.port))
            if port.protocol.is_http:
                plan.http = True
            elif port.protocol.is_unsupported:
                plan.http = True
                plan.sniffed.extend((address, service) for address in service.vips)
            elif not service.vips:
                plan.unaddressed.append(service)
            else:
                _add_addresses(plan, service)
    return plans


def _add_addresses(plan: _PortPlan, service: Service) -> None:
    for address in service.vips:
        if "/" in address:  # a ServiceEntry may give a CIDR: matched as a prefix instead
            plan.prefixed.append((address, service))
        elif address in plan.vips:
            log.warning("outbound %s_%d: %s conflicts with %s; keeping the first",
                        address, plan.number, service.hostname, plan.vips[address].hostname)
        else:
            plan.vips[address] = service


def _is_tls(service: Service, port: int) -> bool:
    declared = service.port(port)
    return declared is not None and declared.protocol in (Protocol.TLS, Protocol.HTTPS)


def _for_host(vss: Sequence[VirtualService], host: str) -> list[VirtualService]:
    return [vs for vs in vss if any(host_matches(h, host) for h in vs.hosts)]


class _Builder:
    """Outbound listeners of one proxy."""

    def __init__(self, push: PushContext, proxy: Proxy) -> None:
        self.push = push
        self.proxy = proxy
        self.vss = push.virtual_services_for(proxy, MESH_GATEWAY)
        self.default_chain = filter_chain(
            "PassthroughFilterChain", None,
            tcp_proxy(fallback_cluster(push.outbound_traffic_policy(proxy))),
        )

    def _context(self, port: int, service: Service) -> RouteContext:
        return RouteContext(self.push, self.proxy, MESH_GATEWAY, port, service.vips)

    def tcp(self, port: int, service: Service) -> lc_pb2.Filter:
        """tcp_proxy for raw bytes to a service: its ``tcp[]`` route, else its cluster."""
        routed = tcp_route(_for_host(self.vss, service.hostname), self._context(port, service))
        return tcp_proxy(routed or cluster_name(OUTBOUND, port, "", service.hostname))

    def sni(self, port: int, service: Service, claimed: set[str]) -> list[TlsRoute]:
        """SNI routes for a TLS service: its ``tls[]`` routes, then its own name."""
        if not _is_tls(service, port):
            return []
        routes = tls_routes(_for_host(self.vss, service.hostname),
                            self._context(port, service), lambda _: True)
        routes.append(TlsRoute((service.hostname,),
                               [(cluster_name(OUTBOUND, port, "", service.hostname), 100)]))
        out = []
        for route in routes:
            names = tuple(n for n in route.sni_hosts if n not in claimed)
            claimed.update(names)
            if names:
                out.append(TlsRoute(names, route.destinations))
        return out

    def listener(
        self, name: str, address: str, port: int, chains: list[lc_pb2.FilterChain],
        default: lc_pb2.FilterChain | None = None,
    ) -> listener_pb2.Listener:
        out = listener_pb2.Listener(
            name=name,
            address=socket_address(address, port),
            filter_chains=chains,
            traffic_direction=base_pb2.OUTBOUND,
            listener_filters=inspectors_for(chains),
        )
        out.bind_to_port.value = False
        if default is not None:
            out.default_filter_chain.CopyFrom(default)
        if out.listener_filters:
            out.listener_filters_timeout.CopyFrom(
                duration(self.push.mesh.protocol_detection_timeout)
            )
            out.continue_on_listener_filters_timeout = True
        return out

    def wildcard(self, plan: _PortPlan) -> listener_pb2.Listener | None:
        port = plan.number
        name = f"{WILDCARD}_{port}"
        if port in RESERVED_PORTS:
            log.warning("outbound %s: port %d belongs to the proxy; listener skipped", name, port)
            return None
        hcm = http_connection_manager(f"outbound_{name}", rds=str(port)) if plan.http else None
        chains: list[lc_pb2.FilterChain] = []
        seen: set[str] = set()
        groups = [(a, s, hcm) for a, s in plan.sniffed] + [(a, s, None) for a, s in plan.prefixed]
        for address, service, http in groups:
            if address in seen:
                log.warning("outbound %s:%d: %s conflicts with an earlier service; skipped",
                            address, port, service.hostname)
                continue
            seen.add(address)
            chains += _group(f"{address}_{port}", (address,), http, [], self.tcp(port, service))
        claimed: set[str] = set()
        sni = [r for s in plan.unaddressed for r in self.sni(port, s, claimed)]
        opaque = [s for s in plan.unaddressed if not _is_tls(s, port)]
        for loser in opaque[1:]:
            log.warning("outbound %s: TCP service %s conflicts with %s; keeping the first",
                        name, loser.hostname, opaque[0].hostname)
        catch_all = self.tcp(port, opaque[0]) if opaque else None
        chains += _group(name, (), hcm, sni, catch_all)
        if not chains:
            return None
        return self.listener(name, WILDCARD, port, chains, self.default_chain)

    def vip(self, address: str, port: int, service: Service) -> listener_pb2.Listener:
        name = f"{address}_{port}"
        sni = self.sni(port, service, set())
        return self.listener(name, address, port,
                             _group(name, (), None, sni, self.tcp(port, service)))


def _group(
    name: str, prefixes: Sequence[str], http: lc_pb2.Filter | None,
    sni: Sequence[TlsRoute], tcp: lc_pb2.Filter | None,
) -> list[lc_pb2.FilterChain]:
    """Chains for one destination (a prefix set, or any): SNI routes, then HTTP/TCP."""
    chains = [
        filter_chain(name, chain_match(prefixes=prefixes, server_names=r.sni_hosts),
                     tcp_proxy(r.destinations))
        for r in sni
    ]
    if http is not None:
        chains += sniffed_chains(name, http, tcp, prefixes)
    elif tcp is not None:
        chains.append(filter_chain(name, chain_match(prefixes=prefixes), tcp))
    return chains


def outbound_listeners(push: PushContext, proxy: Proxy) -> list[listener_pb2.Listener]:
    """``virtualOutbound`` first, then per-port listeners by port, each wildcard before VIPs."""
    builder = _Builder(push, proxy)
    out = [virtual_outbound(push.outbound_traffic_policy(proxy))]
    for number, plan in sorted(_plan(push.visible_services(proxy)).items()):
        wildcard = builder.wildcard(plan)
        if wildcard is not None:
            out.append(wildcard)
        out += [builder.vip(address, number, s) for address, s in sorted(plan.vips.items())]
    return out
