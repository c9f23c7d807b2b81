"""Sidecar outbound route configurations: one per HTTP (or sniffed) service port.

Route configuration ``"P"`` is what the outbound listener ``0.0.0.0_P`` asks for. It holds
a virtual host per service with port P (named ``<host>:P``), whose routes come from the
VirtualService bound to ``mesh`` for that host or else send everything to the service's
cluster; then a catch-all virtual host for any other destination on that port.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from pilotfish.core.model import Resolution, Service, host_matches
from pilotfish.core.proxy import Proxy, ProxyType
from pilotfish.core.push_context import PushContext, VirtualService
from pilotfish.translators.common import PASSTHROUGH_CLUSTER
from pilotfish.translators.destinations import RouteContext, consistent_hash, hash_policy
from pilotfish.translators.route_action import set_timeout
from pilotfish.translators.route_match import MESH_GATEWAY
from pilotfish.translators.routes import default_route, vs_routes
from pilotfish.translators.vhost_domains import service_domains

# Istio raises Envoy's 4 KiB default so directResponse bodies up to 1 MiB are served whole.
MAX_DIRECT_RESPONSE_BODY = 1024 * 1024
ALLOW_ANY = "allow_any"
BLOCK_ALL = "block_all"
# Non-service VirtualService hosts ("example.com") are only routable on port 80, where a
# plain HTTP client would send them (Istio's behaviour).
PLAIN_HOST_PORT = 80


def _http_port(service: Service, port: int) -> bool:
    found = service.port(port)
    return found is not None and (found.protocol.is_http or found.protocol.is_unsupported)


def sidecar_ports(push: PushContext, proxy: Proxy) -> list[int]:
    """Ports that get a route configuration: every HTTP or auto-detected port of a visible
    service (ExternalName aliases ride on their target's route)."""
    return _ports(push.visible_services(proxy))


def _ports(visible: Iterable[Service]) -> list[int]:
    ports = {
        p.port
        for svc in visible if svc.resolution is not Resolution.ALIAS
        for p in svc.ports if p.protocol.is_http or p.protocol.is_unsupported
    }
    return sorted(ports)


@attrs.define
class _Builder:
    """Collects virtual hosts, enforcing unique names and first-wins domains."""

    known_fqdns: set[str]
    names: set[str] = attrs.Factory(set)
    domains: set[str] = attrs.Factory(set)
    hosts: list[rc.VirtualHost] = attrs.Factory(list)

    def add(self, name: str, domains: Sequence[str], short: Sequence[str],
            routes: Iterable[rc.Route]) -> None:
        if name in self.names:
            return
        self.names.add(name)
        kept = []
        for domain in domains:
            lowered = domain.lower()
            # A short form that is some service's real name belongs to that service.
            if lowered in self.domains or (domain in short and domain in self.known_fqdns):
                continue
            self.domains.add(lowered)
            kept.append(domain)
        if kept:
            self.hosts.append(rc.VirtualHost(
                name=name, domains=kept, routes=list(routes), include_request_attempt_count=True,
            ))


def _bound_virtual_services(push: PushContext, proxy: Proxy) -> list[VirtualService]:
    bound = [vs for vs in push.virtual_services_for(proxy, MESH_GATEWAY) if vs.hosts]
    if proxy.type is not ProxyType.SIDECAR:
        return bound
    scope = push.sidecar_scope(proxy)
    return [vs for vs in bound if any(scope.imports(vs.namespace, h) for h in vs.hosts)]


def vs_owners(vss: Sequence[VirtualService], services: Iterable[Service]) -> dict[str, int]:
    """For each service, the index of the VirtualService whose host names it most precisely
    (exact beats wildcard, longer wildcard beats shorter, earlier beats later)."""
    owners: dict[str, tuple[int, int]] = {}
    for svc in services:
        for index, vs in enumerate(vss):
            for host in vs.hosts:
                if host != svc.hostname and not (
                    host.startswith("*") and host_matches(host, svc.hostname)
                ):
                    continue
                rank = 1 << 20 if host == svc.hostname else len(host)
                if svc.hostname not in owners or rank > owners[svc.hostname][0]:
                    owners[svc.hostname] = (rank, index)
    return {host: index for host, (_, index) in owners.items()}


def _split_hosts(
    vs: VirtualService, index: int, by_host: dict[str, Service], owners: dict[str, int]
) -> tuple[list[str], list[Service]]:
    """A VirtualService's hosts → (hosts that are not services, services it routes)."""
    plain: list[str] = []
    matched: list[Service] = []
    for host in vs.hosts:
        if not host.startswith("*"):
            if host in by_host:
                matched.append(by_host[host])
            else:
                plain.append(host)
            continue
        hits = [s for name, s in by_host.items() if host_matches(host, name)]
        matched += [s for s in hits if owners.get(s.hostname) == index]
        if not hits:
            plain.append(host)
    return plain, matched


def _catch_all(policy: str) -> rc.VirtualHost:
    if policy == "REGISTRY_ONLY":
        route = rc.Route(name=BLOCK_ALL, match=rc.RouteMatch(prefix="/"),
                         direct_response=rc.DirectResponseAction(status=502))
        name = BLOCK_ALL
    else:
        route = rc.Route(name=ALLOW_ANY, match=rc.RouteMatch(prefix="/"),
                         route=rc.RouteAction(cluster=PASSTHROUGH_CLUSTER))
        set_timeout(route.route, duration_pb2.Duration())
        name = ALLOW_ANY
    return rc.VirtualHost(name=name, domains=["*"], routes=[route],
                          include_request_attempt_count=True)


@attrs.frozen
class _View:
    """What a sidecar sees, computed once for all of its route configurations."""

    visible: list[Service]
    aliases: dict[str, list[Service]]  # target hostname → ExternalName services naming it
    vss: list[VirtualService]  # bound to mesh, visible, imported by the Sidecar resource
    policy: str  # outbound traffic policy: ALLOW_ANY or REGISTRY_ONLY


def sidecar_route_configs(
    push: PushContext, proxy: Proxy, memo: dict[Any, Any]
) -> list[route_pb2.RouteConfiguration]:
    """Route configurations ``"<port>"`` for every port in `sidecar_ports`."""
    visible = push.visible_services(proxy)
    aliases: dict[str, list[Service]] = {}
    for svc in visible:
        if svc.resolution is Resolution.ALIAS and svc.external_name:
            aliases.setdefault(svc.external_name, []).append(svc)
    view = _View(visible, aliases, _bound_virtual_services(push, proxy),
                 push.outbound_traffic_policy(proxy))
    return [_route_config(push, proxy, view, port, memo) for port in _ports(visible)]


def _route_config(
    push: PushContext, proxy: Proxy, view: _View, port: int, memo: dict[Any, Any]
) -> route_pb2.RouteConfiguration:
    services = [
        s for s in view.visible if s.resolution is not Resolution.ALIAS and _http_port(s, port)
    ]
    by_host = {s.hostname: s for s in services}
    owners = vs_owners(view.vss, services)
    ctx = RouteContext(push, proxy, port, frozenset({MESH_GATEWAY}))
    builder = _Builder(known_fqdns=set(by_host))
    claimed: set[str] = set()
    for index, vs in enumerate(view.vss):
        plain, matched = _split_hosts(vs, index, by_host, owners)
        if not matched and port != PLAIN_HOST_PORT:
            continue
        routes = vs_routes(ctx, vs, memo)
        if not routes:
            continue  # nothing applies to this proxy: services keep their default route
        for host in plain:
            builder.add(f"{host}:{port}", [host], [], routes)
        for svc in matched:
            aliases = view.aliases.get(svc.hostname, ())
            domains, short = service_domains(svc, proxy.dns_domain, aliases)
            builder.add(f"{svc.hostname}:{port}", domains, short, routes)
            claimed.add(svc.hostname)

    for svc in services:
        if svc.hostname in claimed:
            continue
        policy = hash_policy(consistent_hash(push, proxy, svc.hostname, port))
        aliases = view.aliases.get(svc.hostname, ())
        domains, short = service_domains(svc, proxy.dns_domain, aliases)
        builder.add(f"{svc.hostname}:{port}", domains, short,
                    [default_route(ctx, svc.hostname, port, policy)])

    virtual_hosts = sorted(builder.hosts, key=lambda v: v.name)
    virtual_hosts.append(_catch_all(view.policy))
    return route_pb2.RouteConfiguration(
        name=str(port),
        virtual_hosts=virtual_hosts,
        validate_clusters=wrappers_pb2.BoolValue(value=False),
        max_direct_response_body_size_bytes=wrappers_pb2.UInt32Value(
            value=MAX_DIRECT_RESPONSE_BODY
        ),
        ignore_port_in_host_matching=True,
    )
