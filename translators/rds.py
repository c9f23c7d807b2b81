"""RDS: the route configurations a proxy's HTTP listeners name.

Route configuration names are the contract with LDS:

- sidecars: ``"<port>"`` for every port on which some visible service speaks HTTP or an
  undeclared (auto-detected) protocol — the RDS name of outbound listener ``0.0.0.0_<port>``;
- routers: ``http.<port>`` per port with plain-HTTP servers and
  ``https.<port>.<portName>.<gateway>.<namespace>`` per TLS-terminating HTTPS server
  (`pilotfish.translators.gateway_routes.route_name` computes it for a server).

Output depends only on the proxy's scope (type, namespace, labels, DNS domain).
"""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3 import route_pb2

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.core.xds import types
from pilotfish.translators.gateway_routes import gateway_route_configs
from pilotfish.translators.virtual_hosts import sidecar_route_configs


class _Routes:
    type_url = types.ROUTE
    # Endpoints and workloads never change a route table; these kinds can.
    depends_on: frozenset[str] | None = frozenset({
        "VirtualService", "DestinationRule", "Service", "ServiceEntry", "Gateway", "Sidecar",
    })


class SidecarRoutes(_Routes):
    """``RouteConfiguration`` ``"<port>"`` for each outbound HTTP port (plugin ``rds``)."""

    proxy_kinds = frozenset({"sidecar"})

    def generate(
        self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]
    ) -> list[route_pb2.RouteConfiguration]:
        return sidecar_route_configs(push, proxy, memo)


class RouterRoutes(_Routes):
    """``http.<port>`` and ``https.<port>...`` route tables of a gateway (plugin ``rds``)."""

    proxy_kinds = frozenset({"router"})

    def generate(
        self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]
    ) -> list[route_pb2.RouteConfiguration]:
        return gateway_route_configs(push, proxy, memo)


@hookimpl
def pilotfish_xds_generator() -> list[_Routes]:
    return [SidecarRoutes(), RouterRoutes()]
