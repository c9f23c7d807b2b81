"""VirtualService ``tcp[]`` and ``tls[]`` routes, as the L4 listeners use them.

HTTP routes live in RDS; L4 routes have no route table in Envoy, so they are resolved here
into tcp_proxy destinations (and, for ``tls[]``, the SNI names a filter chain matches on).
Matching conditions that describe the client (``sourceLabels``, ``sourceNamespace``,
``gateways``) are decided against the proxy being generated for, as istiod does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2

from pilotfish.core.model import labels_match, resolve_host
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import (
    PushContext,
    VirtualService,
    gateway_ref,
)
from pilotfish.translators.common import OUTBOUND, cluster_name, parse_cluster_name
from pilotfish.translators.destinations import consistent_hash
from pilotfish.translators.filter_chains import Weighted, tcp_proxy
from pilotfish.translators.tunnel import tunnel_for


@attrs.frozen
class RouteContext:
    """Where L4 routes are evaluated: for which proxy, gateway (or ``mesh``) and port."""

    push: PushContext
    proxy: Proxy
    gateway: str
    port: int
    # Sidecars: the service's addresses, which ``destinationSubnets`` are checked against.
    addresses: tuple[str, ...] = ()


@attrs.frozen
class TlsRoute:
    sni_hosts: tuple[str, ...]
    destinations: Weighted
    tunnel: Mapping[str, Any] | None = None  # the destination's DestinationRule tunnel

    @property
    def proxy(self) -> lc_pb2.Filter:
        return tcp_proxy(self.destinations, tunnel=self.tunnel)


def l4_proxy(ctx: RouteContext, destinations: str | Weighted) -> lc_pb2.Filter:
    """tcp_proxy to ``destinations``, through the HTTP tunnel their DestinationRule sets,
    hashing on the client's IP when a single destination's ``consistentHash`` says
    ``useSourceIp`` (as Istio does)."""
    return tcp_proxy(destinations, tunnel=tunnel_for(ctx.push, ctx.proxy, destinations),
                     hash_source_ip=_hashes_source_ip(ctx, destinations))


def _hashes_source_ip(ctx: RouteContext, destinations: str | Weighted) -> bool:
    kept = [destinations] if isinstance(destinations, str) else \
        [name for name, weight in destinations if weight > 0]
    parsed = parse_cluster_name(kept[0]) if len(kept) == 1 else None
    if parsed is None or parsed[0] != OUTBOUND:
        return False
    _, port, subset, host = parsed
    spec = consistent_hash(ctx.push, ctx.proxy, host, port, subset)
    return bool((spec or {}).get("useSourceIp"))


def _in_subnets(subnets: Sequence[str], addresses: Sequence[str]) -> bool:
    for subnet in subnets:
        try:
            network = ipaddress.ip_network(str(subnet), strict=False)
        except ValueError:
            continue
        for address in addresses:
            try:
                if ipaddress.ip_network(address, strict=False).subnet_of(network):  # type: ignore[arg-type]
                    return True
            except (ValueError, TypeError):
                continue
    return False


def _applies(match: Mapping[str, Any], vs: VirtualService, ctx: RouteContext) -> bool:
    """One ``match`` entry's client- and port-side conditions."""
    port = match.get("port")
    if port and int(port) != ctx.port:
        return False
    if not labels_match(match.get("sourceLabels"), ctx.proxy.labels):
        return False
    source_ns = match.get("sourceNamespace")
    if source_ns and source_ns != ctx.proxy.namespace:
        return False
    gateways = match.get("gateways")
    if gateways and ctx.gateway not in {gateway_ref(str(g), vs.namespace) for g in gateways}:
        return False
    subnets = match.get("destinationSubnets")
    return not (subnets and ctx.addresses and not _in_subnets(subnets, ctx.addresses))


def _cluster(destination: Mapping[str, Any], vs: VirtualService, ctx: RouteContext) -> str:
    host = resolve_host(str(destination.get("host") or ""), vs.namespace, ctx.push.mesh.domain)
    port = (destination.get("port") or {}).get("number")
    if not port:
        # Istio's default: the destination service's only port, else the listener's port.
        service = ctx.push.service(host)
        port = service.ports[0].port if service and len(service.ports) == 1 else ctx.port
    return cluster_name(OUTBOUND, int(port), str(destination.get("subset") or ""), host)


def destinations(
    routes: Sequence[Mapping[str, Any]], vs: VirtualService, ctx: RouteContext
) -> Weighted:
    """``route[]`` → (cluster, weight). An unweighted single destination takes everything;
    if no weight at all is given for several, they share equally."""
    out = [
        (_cluster(r.get("destination") or {}, vs, ctx), int(r.get("weight") or 0))
        for r in routes
    ]
    if len(out) == 1:
        return [(out[0][0], 100)]
    if out and not any(weight for _, weight in out):
        return [(name, 1) for name, _ in out]
    return out


def tcp_route(vss: Sequence[VirtualService], ctx: RouteContext) -> Weighted | None:
    """The first ``tcp[]`` rule that applies (a rule without ``match`` always does)."""
    for vs in vss:
        for rule in vs.tcp:
            matches = rule.get("match") or [{}]
            if any(_applies(m, vs, ctx) for m in matches) and rule.get("route"):
                return destinations(rule["route"], vs, ctx)
    return None


def tls_routes(
    vss: Sequence[VirtualService], ctx: RouteContext, allowed: Callable[[str], bool]
) -> list[TlsRoute]:
    """Every applicable ``tls[]`` match, in order, with its SNI names cut to ``allowed``."""
    out = []
    for vs in vss:
        for rule in vs.tls:
            if not rule.get("route"):
                continue
            for match in rule.get("match") or ():
                if not _applies(match, vs, ctx):
                    continue
                names = tuple(str(h) for h in match.get("sniHosts") or () if allowed(str(h)))
                if names:
                    routes = destinations(rule["route"], vs, ctx)
                    out.append(TlsRoute(names, routes,
                                        tunnel_for(ctx.push, ctx.proxy, routes)))
    return out
