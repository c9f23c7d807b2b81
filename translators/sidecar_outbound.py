"""A sidecar's outbound listeners: ``virtualOutbound`` and one listener per port or VIP.

iptables sends every outbound connection to 15001; ``virtualOutbound`` hands it to the
listener whose address matches the original destination (``use_original_dst``), so the
per-port listeners never bind. Which listener a service port lands in follows its protocol
(`outbound_plan`):

- HTTP ports share ``0.0.0.0_P``, an HCM routing by Host with RDS ``"P"``;
- auto-detect ports join the same listener: sniffed HTTP goes to RDS ``"P"``, raw bytes to
  a VIP go to that service's cluster (chains matching the VIP as a prefix);
- TCP-family ports with a VIP get ``<VIP>_P``, a tcp_proxy (VirtualService ``tcp[]`` and,
  for TLS, SNI-matched ``tls[]`` routes apply); without a VIP they become a chain of
  ``0.0.0.0_P`` (by SNI for TLS, else the port's catch-all).

A listener carries only the inspectors its chains need and the active sniffers allow.
Opaque TCP (a declared TCP port, or a server-first one) must never wait for the client to
speak, so a wildcard listener that opaque TCP reaches gets no inspector at all: its HTTP
services are then told apart by VIP instead of by sniffing. Whatever no chain takes goes
to the default chain: PassthroughCluster with ALLOW_ANY, BlackHoleCluster with
REGISTRY_ONLY.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import attrs
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.listener.v3 import listener_pb2

from pilotfish.core.model import Service, host_matches
from pilotfish.core.proxy import TPROXY, Proxy
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
    RAW_BUFFER,
    chain_match,
    filter_chain,
    sniffed_chains,
    socket_address,
    tcp_proxy,
)
from pilotfish.translators.http_filters import http_connection_manager
from pilotfish.translators.listener_filters import (
    ALL,
    NONE,
    PLAINTEXT_HTTP_ALPN,
    Detection,
    inspectors_for,
)
from pilotfish.translators.outbound_plan import Kind, PortPlan, plan
from pilotfish.translators.tcp_routes import (
    RouteContext,
    TlsRoute,
    l4_proxy,
    tcp_route,
    tls_routes,
)

log = logging.getLogger("pilotfish.lds")

WILDCARD = "0.0.0.0"
# The proxy's own ports: a wildcard listener there would collide with the capture or
# bootstrap listeners (Envoy refuses two listeners on one address).
RESERVED_PORTS = frozenset({15000, 15001, 15004, 15006, 15008, 15020, 15021, 15053, 15090})


def fallback_cluster(policy: str) -> str:
    return BLACKHOLE_CLUSTER if policy == "REGISTRY_ONLY" else PASSTHROUGH_CLUSTER


def virtual_outbound(policy: str, transparent: bool = False) -> listener_pb2.Listener:
    """``transparent`` for a TPROXY proxy, as Istio sets it on both capture listeners."""
    listener = listener_pb2.Listener(
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
    if transparent:
        listener.transparent.value = True
    return listener


def _for_host(vss: Sequence[VirtualService], host: str) -> list[VirtualService]:
    return [vs for vs in vss if any(host_matches(h, host) for h in vs.hosts)]


class _Builder:
    """Outbound listeners of one proxy."""

    def __init__(self, push: PushContext, proxy: Proxy, detection: Detection) -> None:
        self.push = push
        self.proxy = proxy
        self.detection = detection
        self.vss = push.virtual_services_for(proxy, MESH_GATEWAY)
        self.default_chain = filter_chain(
            "PassthroughFilterChain", None,
            tcp_proxy(fallback_cluster(push.outbound_traffic_policy(proxy))),
        )

    def _context(self, port: int, service: Service) -> RouteContext:
        return RouteContext(self.push, self.proxy, MESH_GATEWAY, port, service.vips)

    def tcp(self, port: int, service: Service) -> lc_pb2.Filter:
        """tcp_proxy for raw bytes to a service: its ``tcp[]`` route, else its cluster."""
        ctx = self._context(port, service)
        routed = tcp_route(_for_host(self.vss, service.hostname), ctx)
        return l4_proxy(ctx, routed or cluster_name(OUTBOUND, port, "", service.hostname))

    def sni(self, port: int, service: Service, claimed: set[str]) -> list[TlsRoute]:
        """SNI routes for a TLS service: its ``tls[]`` routes, then its own name."""
        routes = tls_routes(_for_host(self.vss, service.hostname),
                            self._context(port, service), lambda _: True)
        routes.append(TlsRoute((service.hostname,),
                               [(cluster_name(OUTBOUND, port, "", service.hostname), 100)]))
        out = []
        for route in routes:
            names = tuple(n for n in route.sni_hosts if n not in claimed)
            claimed.update(names)
            if names:
                out.append(TlsRoute(names, route.destinations, route.tunnel))
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

    def wildcard(self, plan: PortPlan) -> listener_pb2.Listener | None:
        port = plan.number
        name = f"{WILDCARD}_{port}"
        if port in RESERVED_PORTS:
            log.warning("outbound %s: port %d belongs to the proxy; listener skipped", name, port)
            return None
        # What this listener may inspect: nothing at all once opaque TCP reaches it.
        quiet = plan.opaque_on_wildcard
        detection = NONE if quiet else self.detection
        hcm = (http_connection_manager(f"outbound_{name}", rds=str(port))
               if plan.has_http else None)
        chains: list[lc_pb2.FilterChain] = []
        seen: set[str] = set()
        groups = [(a, s, hcm if detection.http else None) for a, s in plan.sniffed]
        groups += [(a, s, None) for a, s in plan.prefixed]
        for address, service, http in groups:
            if address in seen:
                log.warning("outbound %s:%d: %s conflicts with an earlier service; skipped",
                            address, port, service.hostname)
                continue
            seen.add(address)
            chains += _group(f"{address}_{port}", (address,), http, [], self.tcp(port, service),
                             detection)
        claimed: set[str] = set()
        tls = [s for s in plan.unaddressed if plan.kind(s) is Kind.TLS]
        sni = [r for s in tls for r in self.sni(port, s, claimed)] if detection.tls else []
        # Without SNI, TLS services are told apart no better than any other bytes.
        opaque = [s for s in plan.unaddressed
                  if plan.kind(s) is Kind.OPAQUE or not detection.tls]
        for loser in opaque[1:]:
            log.warning("outbound %s: TCP service %s conflicts with %s; keeping the first",
                        name, loser.hostname, opaque[0].hostname)
        catch_all = self.tcp(port, opaque[0]) if opaque else None
        if hcm is not None and catch_all is not None and not detection.http:
            chains += self._http_by_vip(plan, name, hcm, seen, opaque[0])
            hcm = None
        if plan.http and detection.http:
            # A declared HTTP port is HTTP in whichever version: the inspector reports both.
            detection = attrs.evolve(detection, http_alpn=PLAINTEXT_HTTP_ALPN)
        chains += _group(name, (), hcm, sni, catch_all, detection)
        if not chains:
            return None
        return self.listener(name, WILDCARD, port, chains, self.default_chain)

    def _http_by_vip(
        self, plan: PortPlan, name: str, hcm: lc_pb2.Filter, seen: set[str], tcp: Service,
    ) -> list[lc_pb2.FilterChain]:
        """HTTP services on a port whose catch-all is opaque TCP: reachable by VIP only."""
        chains = []
        for service in plan.http:
            vips = [v for v in service.vips if "/" not in v and v not in seen]
            if not vips:
                log.warning("outbound %s: HTTP service %s has no address, and the port's "
                            "catch-all is TCP service %s; not reachable on this port",
                            name, service.hostname, tcp.hostname)
            seen.update(vips)
            chains += [filter_chain(f"{v}_{plan.number}", chain_match(prefixes=(v,)), hcm)
                       for v in vips]
        for service in plan.auto_unaddressed:
            log.warning("outbound %s: %s has no address and cannot be sniffed next to TCP "
                        "service %s; not reachable on this port", name, service.hostname,
                        tcp.hostname)
        return chains

    def vip(self, address: str, port: int, service: Service, kind: Kind) -> listener_pb2.Listener:
        name = f"{address}_{port}"
        tls = kind is Kind.TLS and self.detection.tls
        sni = self.sni(port, service, set()) if tls else []
        return self.listener(name, address, port,
                             _group(name, (), None, sni, self.tcp(port, service), NONE))


def _group(
    name: str, prefixes: Sequence[str], http: lc_pb2.Filter | None,
    sni: Sequence[TlsRoute], tcp: lc_pb2.Filter | None, detection: Detection = ALL,
) -> list[lc_pb2.FilterChain]:
    """Chains for one destination (a prefix set, or any): SNI routes, then HTTP/TCP.

    Without HTTP detection an HCM here serves a declared HTTP port as is; it still insists
    on ``raw_buffer`` when the TLS inspector runs, so TLS to other hosts passes through.
    """
    chains = [
        filter_chain(name, chain_match(prefixes=prefixes, server_names=r.sni_hosts),
                     r.proxy)
        for r in sni
    ]
    if http is not None and detection.http:
        chains += sniffed_chains(name, http, tcp, prefixes, detection)
    elif http is not None:
        plain = RAW_BUFFER if detection.tls else ""
        chains.append(filter_chain(name, chain_match(prefixes=prefixes, transport=plain), http))
    elif tcp is not None:
        chains.append(filter_chain(name, chain_match(prefixes=prefixes), tcp))
    return chains


def outbound_listeners(
    push: PushContext, proxy: Proxy, detection: Detection = ALL
) -> list[listener_pb2.Listener]:
    """``virtualOutbound`` first, then per-port listeners by port, each wildcard before VIPs."""
    builder = _Builder(push, proxy, detection)
    out = [virtual_outbound(push.outbound_traffic_policy(proxy),
                            proxy.scope.interception_mode == TPROXY)]
    for number, port_plan in sorted(plan(push.visible_services(proxy), detection).items()):
        wildcard = builder.wildcard(port_plan)
        if wildcard is not None:
            out.append(wildcard)
        out += [builder.vip(address, number, s, port_plan.kind(s))
                for address, s in sorted(port_plan.vips.items())]
    return out
