"""Where a route sends traffic: destination → cluster name, and the DestinationRule's
consistent-hash key, which Envoy reads from the route rather than from the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from envoy.config.route.v3 import route_components_pb2 as rc

from pilotfish.core.model import Resolution, resolve_host
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.translators.common import OUTBOUND, cluster_name, istio_duration


@attrs.frozen
class RouteContext:
    """Everything a route depends on besides the VirtualService itself."""

    push: PushContext
    proxy: Proxy
    port: int  # the route configuration's port: listener port (sidecar) or server port
    gateways: frozenset[str]  # {"mesh"} on sidecars, {"ns/name"} on gateways
    tls: bool = False  # routes served behind TLS termination (gateway HTTPS servers)


@attrs.frozen
class Target:
    """One resolved destination."""

    cluster: str
    hostname: str  # the service the cluster belongs to (an alias's target, not the alias)
    port: int
    subset: str


def resolve_target(ctx: RouteContext, destination: Mapping[str, Any], namespace: str) -> Target:
    """``outbound|port|subset|host`` for an Istio ``Destination``.

    The port is the destination's, else the service's only port, else the route's port.
    An unknown host still gets its cluster name: traffic to it fails in Envoy (no such
    cluster), which is what Istio does, rather than being sent somewhere else.
    """
    host = resolve_host(str(destination.get("host") or ""), namespace, ctx.push.mesh.domain)
    service = ctx.push.service(host)
    target = host
    if service is not None and service.resolution is Resolution.ALIAS and service.external_name:
        # An ExternalName service has no cluster of its own: route to what it names.
        target = service.external_name
    number = int((destination.get("port") or {}).get("number") or 0)
    if not number:
        number = service.ports[0].port if service is not None and len(service.ports) == 1 else (
            ctx.port
        )
    subset = str(destination.get("subset") or "")
    return Target(cluster_name(OUTBOUND, number, subset, target), target, number, subset)


def _lb_hash(policy: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if not policy:
        return None
    value = (policy.get("loadBalancer") or {}).get("consistentHash")
    return value if isinstance(value, Mapping) else None


def _port_lb_hash(policy: Mapping[str, Any] | None, port: int) -> Mapping[str, Any] | None:
    for setting in (policy or {}).get("portLevelSettings") or ():
        if int((setting.get("port") or {}).get("number") or 0) == port:
            return _lb_hash(setting)
    return None


def consistent_hash(
    push: PushContext, proxy: Proxy, hostname: str, port: int, subset: str = ""
) -> Mapping[str, Any] | None:
    """The DestinationRule ``consistentHash`` that applies to traffic to host:port/subset.

    Most specific first: the subset's port-level setting, the subset's policy, the
    top-level port-level setting, the top-level policy.
    """
    rule = push.destination_rule(proxy, hostname)
    if rule is None:
        return None
    top = rule.traffic_policy
    chosen = _lb_hash(top)
    by_port = _port_lb_hash(top, port)
    subset_policy = (rule.subset(subset) or {}).get("trafficPolicy") if subset else None
    for candidate in (by_port, _lb_hash(subset_policy), _port_lb_hash(subset_policy, port)):
        if candidate is not None:
            chosen = candidate
    return chosen


def hash_policy(spec: Mapping[str, Any] | None) -> rc.RouteAction.HashPolicy | None:
    """A ``consistentHash`` key → the route's ``hash_policy`` (None when it has no key)."""
    if not spec:
        return None
    out = rc.RouteAction.HashPolicy()
    if spec.get("httpHeaderName"):
        out.header.header_name = str(spec["httpHeaderName"])
    elif isinstance(spec.get("httpCookie"), Mapping):
        cookie = spec["httpCookie"]
        out.cookie.name = str(cookie.get("name") or "")
        if cookie.get("path"):
            out.cookie.path = str(cookie["path"])
        if cookie.get("ttl") is not None:
            out.cookie.ttl.CopyFrom(istio_duration(cookie["ttl"]))
    elif spec.get("useSourceIp"):
        out.connection_properties.source_ip = True
    elif spec.get("httpQueryParameterName"):
        out.query_parameter.name = str(spec["httpQueryParameterName"])
    else:
        return None
    return out


def target_hash_policy(ctx: RouteContext, target: Target) -> rc.RouteAction.HashPolicy | None:
    return hash_policy(
        consistent_hash(ctx.push, ctx.proxy, target.hostname, target.port, target.subset)
    )
