"""EDS for waypoint proxies (entry point ``waypoint-eds``): one assignment per VIP cluster
of `waypoint_clusters`, the service's pods behind that port (and subset), each an internal
address on ``connect_originate`` carrying where and to whom the HBONE tunnel goes.
"""

from __future__ import annotations

from typing import Any

from envoy.config.endpoint.v3 import endpoint_pb2

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.core.xds import types
from pilotfish.translators.ambient.waypoint_clusters import (
    reached_services,
    vip_assignment,
    vip_clusters,
)
from pilotfish.translators.ambient.waypoint_scope import KIND


class WaypointEndpoints:
    """One assignment per VIP cluster: the service's pods behind that port (and subset)."""

    type_url = types.ENDPOINT
    proxy_kinds = frozenset({KIND})
    depends_on = frozenset({"Service", "ServiceEntry", "DestinationRule", "Gateway", "GatewayClass",
                            "Namespace", "VirtualService", "HTTPRoute", "Pod",
                            "WorkloadEntry", "Endpoints", "EndpointSlice"})

    def generate(self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]
                 ) -> list[endpoint_pb2.ClusterLoadAssignment]:
        out = []
        for service, routed_only in reached_services(push, proxy):
            for name, port, labels, _ in vip_clusters(push, proxy, service, routed_only):
                endpoints = list(push.endpoints(service.hostname, port.port))
                out.append(vip_assignment(push, name, endpoints, labels))
        return out



@hookimpl
def pilotfish_xds_generator() -> WaypointEndpoints:
    return WaypointEndpoints()
