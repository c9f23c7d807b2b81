"""RDS for waypoint proxies (entry point ``waypoint-rds``): one route configuration per
HTTP (or undeclared, sniffed) port of every service bound to the waypoint, named like its
cluster (``inbound-vip|PORT|http|HOST``), asked for by that port's chain of
``main_internal``.

The routes are a sidecar's for the same service (`routes.vs_routes`): the VirtualService
bound to ``mesh`` whose hosts name the service most precisely (HTTPRoutes whose parentRef
is the Service arrive as such VirtualServices, see core/gateway_api), else the default
route. Only the destination clusters differ: a destination that is a service bound to this
waypoint goes to its ``inbound-vip`` cluster (``http/SUBSET`` for a subset), as in istiod;
the waypoint holds no ``outbound`` clusters, so a route to a service that does not use it
finds no cluster (503).

Every chain belongs to one VIP and port, so the one virtual host matches any ``Host``.
"""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import wrappers_pb2

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.model import Service
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.core.xds import types
from pilotfish.translators.ambient.waypoint_clusters import (
    port_kinds,
    served_ports,
    vip_cluster_name,
)
from pilotfish.translators.ambient.waypoint_scope import (
    KIND,
    bound_services,
    owning_virtual_service,
    route_destinations,
)
from pilotfish.translators.common import OUTBOUND, parse_cluster_name
from pilotfish.translators.destinations import RouteContext, consistent_hash, hash_policy
from pilotfish.translators.route_match import MESH_GATEWAY
from pilotfish.translators.routes import default_route, vs_routes
from pilotfish.translators.virtual_hosts import MAX_DIRECT_RESPONSE_BODY


def retarget(name: str, bound: frozenset[str]) -> str:
    """``outbound|P|SUBSET|HOST`` → ``inbound-vip|P|http[/SUBSET]|HOST`` for a bound HOST."""
    parsed = parse_cluster_name(name)
    if parsed is None or parsed[0] != OUTBOUND or parsed[3] not in bound:
        return name
    _, port, subset, host = parsed
    return vip_cluster_name(port, "http", host, subset)


def _retarget_route(route: rc.Route, bound: frozenset[str]) -> None:
    if not route.HasField("route"):
        return
    action = route.route
    if action.cluster:
        action.cluster = retarget(action.cluster, bound)
    for weighted in action.weighted_clusters.clusters:
        weighted.name = retarget(weighted.name, bound)
    for mirror in action.request_mirror_policies:
        mirror.cluster = retarget(mirror.cluster, bound)


def route_config(push: PushContext, proxy: Proxy, service: Service, port: int,
                 bound: frozenset[str], memo: dict[Any, Any]) -> route_pb2.RouteConfiguration:
    ctx = RouteContext(push, proxy, port, frozenset({MESH_GATEWAY}))
    vs = owning_virtual_service(push, proxy, service)
    routes = vs_routes(ctx, vs, memo) if vs is not None else []
    if not routes:
        routes = [default_route(ctx, service.hostname, port, hash_policy(
            consistent_hash(push, proxy, service.hostname, port)))]
    for route in routes:
        _retarget_route(route, bound)
    name = vip_cluster_name(port, "http", service.hostname)
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[rc.VirtualHost(name=f"inbound|http|{port}", domains=["*"],
                                      routes=routes, include_request_attempt_count=True)],
        validate_clusters=wrappers_pb2.BoolValue(value=False),
        max_direct_response_body_size_bytes=wrappers_pb2.UInt32Value(
            value=MAX_DIRECT_RESPONSE_BODY),
    )


class WaypointRoutes:
    type_url = types.ROUTE
    proxy_kinds = frozenset({KIND})
    depends_on = frozenset({"Service", "ServiceEntry", "DestinationRule", "Gateway", "GatewayClass",
                            "Namespace", "VirtualService", "HTTPRoute"})

    def generate(self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]
                 ) -> list[route_pb2.RouteConfiguration]:
        services = bound_services(push, proxy)
        bound = frozenset(b.service.hostname for b in services) | frozenset(
            s.hostname for s in route_destinations(push, proxy))
        return [route_config(push, proxy, b.service, port.port, bound, memo)
                for b in services for port in served_ports(b.service)
                if "http" in port_kinds(port)]


@hookimpl
def pilotfish_xds_generator() -> WaypointRoutes:
    return WaypointRoutes()
