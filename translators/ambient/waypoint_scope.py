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
from pilotfish.core.model import Resolution, Service
from pilotfish.core.objects import ConfigObject
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.core.security_policies import AuthzPolicy, authz_policy

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
    index = _index(push)
    return index.get((proxy.namespace, name))


def _index(push: PushContext) -> Mapping[tuple[str, str], waypoints.Waypoint]:
    return waypoints.index(
        push.objects(index_key("Gateway")),
        {host: service.vips for host, service in push.services.items()}, push.mesh.domain)


def bound_services(push: PushContext, proxy: Proxy) -> list[Bound]:
    """The services whose traffic ztunnel sends to this waypoint, sorted by hostname."""
    own = waypoint_of(push, proxy)
    if own is None:
        return []
    index = _index(push)
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
                 service: Service) -> list[AuthzPolicy]:
    """The AuthorizationPolicies enforced on the waypoint for traffic to ``service``."""
    root = push.mesh.root_namespace
    chosen: Iterable[ConfigObject] = (
        obj for obj in push.security.authorization_policies
        if targets(obj, "Gateway", waypoint.namespace, waypoint.name)
        or targets(obj, "Service", service.namespace, service.name)
        or targets(obj, "GatewayClass", root, waypoints.WAYPOINT_CLASS))
    return [authz_policy(obj) for obj in chosen]
