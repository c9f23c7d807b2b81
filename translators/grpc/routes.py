"""RDS for proxyless gRPC (plugin ``grpc-rds``): one route table per service port.

The routes are the sidecar's for that host and port (``virtual_hosts``: VirtualService
matches, weighted clusters, retries, timeouts, faults, or the default route), so a gRPC
client and an Envoy sidecar route one request the same way. Each table holds the one
virtual host, answering any authority: the listener already chose the service. Per-route
filter config gRPC has no filter for (CORS) is left out; gRPC would refuse the table.
"""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3 import route_components_pb2, route_pb2

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.core.xds import types
from pilotfish.translators.grpc.common import KIND, route_name, served
from pilotfish.translators.http_filters import FAULT_FILTER
from pilotfish.translators.rds import SidecarRoutes
from pilotfish.translators.virtual_hosts import sidecar_route_configs

SUPPORTED_PER_ROUTE = frozenset({FAULT_FILTER})


def grpc_virtual_host(
    host: route_components_pb2.VirtualHost,
) -> route_components_pb2.VirtualHost:
    out = route_components_pb2.VirtualHost(name=host.name, domains=["*"])
    for route in host.routes:
        copy = out.routes.add()
        copy.CopyFrom(route)
        for name in list(copy.typed_per_filter_config):
            if name not in SUPPORTED_PER_ROUTE:
                del copy.typed_per_filter_config[name]
    return out


class GrpcRoutes:
    type_url = types.ROUTE
    proxy_kinds = frozenset({KIND})
    depends_on = SidecarRoutes.depends_on

    def generate(
        self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]
    ) -> list[route_pb2.RouteConfiguration]:
        wanted = {route_name(s.hostname, p.port) for s, p in served(push, proxy)}
        out = []
        for config in sidecar_route_configs(push, proxy, memo):
            for host in config.virtual_hosts:
                # A service's virtual host on port P is named "FQDN:P".
                if host.name in wanted:
                    out.append(route_pb2.RouteConfiguration(
                        name=host.name, virtual_hosts=[grpc_virtual_host(host)]))
        return out


@hookimpl
def pilotfish_xds_generator() -> GrpcRoutes:
    return GrpcRoutes()
