"""What one waypoint proxy serves: its Gateway, the services bound to it and the policies
aimed at it. Sans-IO: a push context and a proxy in, plain data out.

A waypoint proxy is a pod of a Gateway of class ``istio-waypoint``; like every Gateway API
gateway pod it carries ``gateway.networking.k8s.io/gateway-name`` naming its Gateway (in
its own namespace). The services it serves are those `core.ambient.waypoints.binding`
binds to that Gateway (``istio.io/use-waypoint`` on the service or its namespace, a
waypoint for ``service`` or ``all`` traffic). Its L7 AuthorizationPolicies are those whose
``targetRefs`` name the Gateway (kind Gateway) or one of those services (kind Service), in
the Gateway's or the service's namespace, plus policies of the root namespace that target
the Gateway's class (kind GatewayClass), as istiod selects them for a waypoint.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from pilotfish.core.ambient import waypoints
from pilotfish.core.gateway_api import GATEWAY_NAME_LABEL, index_key
from pilotfish.core.model import Resolution, Service, Workload, resolve_host
from pilotfish.core.objects import ConfigObject
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext, VirtualService
from pilotfish.core.security_policies import AuthzPolicy, authz_policy
from pilotfish.translators.delegates import http_rules
from pilotfish.translators.route_match import MESH_GATEWAY
from pilotfish.translators.virtual_hosts import vs_owners

KIND = "waypoint"


@attrs.frozen
class Bound:
    """A service bound to the waypoint, with the IPs it is reached at (its VIPs)."""

    service: Service
    vips: tuple[str, ...]


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return ""  # a CIDR or a hostname: ztunnel never sends those as :authority


def waypoint_of(push: PushContext, proxy: Proxy) -> waypoints.Waypoint | None:
    """The waypoint Gateway the proxy runs for, or None when its pod names none (or a
    Gateway that is not a waypoint)."""
    name = proxy.labels.get(GATEWAY_NAME_LABEL, "")
    if not name:
        return None
    index = waypoint_index(push)
    return index.get((proxy.namespace, name))


def waypoint_index(push: PushContext) -> dict[tuple[str, str], waypoints.Waypoint]:
    """The push's waypoints by (namespace, name) (`waypoints.index`)."""
    return waypoints.index(
        push.objects(index_key("Gateway")),
        {host: service.vips for host, service in push.services.items()}, push.mesh.domain,
        push.objects(index_key("GatewayClass")))


def bound_services(push: PushContext, proxy: Proxy) -> list[Bound]:
    """The services whose traffic ztunnel sends to this waypoint, sorted by hostname."""
    own = waypoint_of(push, proxy)
    if own is None:
        return []
    index = waypoint_index(push)
    out = []
    for hostname in sorted(push.services):
        service = push.services[hostname]
        if service.resolution is Resolution.ALIAS:
            continue
        chosen = waypoints.binding(service.labels, service.namespace,
                                   push.namespaces.get(service.namespace, {}), index,
                                   waypoints.SERVICE)
        if chosen is None or (chosen.namespace, chosen.name) != (own.namespace, own.name):
            continue
        vips = tuple(ip for ip in (_ip(v) for v in service.vips) if ip)
        if vips:
            out.append(Bound(service, vips))
    return out


def bound_workloads(push: PushContext, proxy: Proxy) -> list[Workload]:
    """The workloads whose own addresses ztunnel sends to this waypoint (a waypoint for
    ``workload`` or ``all`` traffic named on the pod or its namespace), by address."""
    own = waypoint_of(push, proxy)
    if own is None or not own.accepts(waypoints.WORKLOAD):
        return []
    index = waypoint_index(push)
    out = []
    for workload in push.registry.workloads:
        chosen = waypoints.binding(workload.labels, workload.namespace,
                                   push.namespaces.get(workload.namespace, {}), index,
                                   waypoints.WORKLOAD)
        if chosen is not None and (chosen.namespace, chosen.name) == (own.namespace, own.name) \
                and _ip(workload.address):
            out.append(workload)
    return sorted(out, key=lambda w: w.address)


def owning_virtual_service(push: PushContext, proxy: Proxy,
                           service: Service) -> VirtualService | None:
    """The mesh VirtualService that routes ``service`` (exact host beats wildcard), as a
    sidecar picks it; HTTPRoutes whose parentRef is the Service arrive as such."""
    vss = [vs for vs in push.virtual_services_for(proxy, MESH_GATEWAY) if vs.hosts]
    index = vs_owners(vss, [service]).get(service.hostname)
    return vss[index] if index is not None else None


def route_destinations(push: PushContext, proxy: Proxy) -> list[Service]:
    """Services the bound services' routes send to (or mirror to) that are not bound to the
    waypoint themselves, such as an HTTPRoute's backends: the waypoint reaches their pods
    too, so they get clusters of their own."""
    bound = bound_services(push, proxy)
    names = {b.service.hostname for b in bound}
    found: dict[str, Service] = {}
    memo: dict[Any, Any] = {}
    for item in bound:
        vs = owning_virtual_service(push, proxy, item.service)
        if vs is None:
            continue
        for rule in http_rules(push, vs, memo):
            spec = rule.spec
            destinations = [entry.get("destination") for entry in spec.get("route") or ()]
            destinations += [entry.get("destination") for entry in spec.get("mirrors") or ()]
            destinations.append(spec.get("mirror"))
            for destination in destinations:
                if not isinstance(destination, Mapping):
                    continue
                host = resolve_host(str(destination.get("host") or ""), rule.namespace,
                                    push.mesh.domain)
                service = push.service(host)
                if service is not None and host not in names and (
                        service.resolution is not Resolution.ALIAS):
                    found[host] = service
    return [found[host] for host in sorted(found)]


def _refs(obj: ConfigObject) -> list[Mapping[str, Any]]:
    refs = list(obj.spec.get("targetRefs") or ())
    single = obj.spec.get("targetRef")
    if isinstance(single, Mapping):
        refs.append(single)
    return [ref for ref in refs if isinstance(ref, Mapping)]


def targets(obj: ConfigObject, kind: str, namespace: str, name: str) -> bool:
    """Does the policy's ``targetRef(s)`` name this object (kind, name) in its namespace?"""
    return obj.namespace == namespace and any(
        str(ref.get("kind") or "") == kind and str(ref.get("name") or "") == name
        for ref in _refs(obj))


def policies_for(push: PushContext, waypoint: waypoints.Waypoint,
                 service: Service | None) -> list[AuthzPolicy]:
    """The AuthorizationPolicies enforced on the waypoint for traffic to ``service`` (None:
    traffic addressed to a workload, which only the waypoint's own policies guard)."""
    root = push.mesh.root_namespace
    chosen: Iterable[ConfigObject] = (
        obj for obj in push.security.authorization_policies
        if targets(obj, "Gateway", waypoint.namespace, waypoint.name)
        or (service is not None and targets(obj, "Service", service.namespace, service.name))
        or targets(obj, "GatewayClass", root, waypoints.WAYPOINT_CLASS))
    return [authz_policy(obj) for obj in chosen]
