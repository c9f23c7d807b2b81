"""LDS for proxyless gRPC (plugin ``grpc-lds``): one API listener per target name.

gRPC looks a target up by the exact name it was given (``xds:///NAME:PORT``), so every name
a pod's resolver would accept for the service gets its listener: the FQDN, and the short
forms (``reviews``, ``reviews.default``, ``reviews.default.svc``) as the sidecar's virtual
hosts accept them. All point at one route table, ``FQDN:PORT``. The connection manager
carries what gRPC's client implements: the fault filter (inert until a route enables it)
and the router, which must come last.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.core.xds import types
from pilotfish.translators.common import ads_config_source, pack
from pilotfish.translators.grpc.common import KIND, route_name, served
from pilotfish.translators.http_filters import FAULT_FILTER, ROUTER_FILTER
from pilotfish.translators.vhost_domains import alt_names


def api_listener(name: str, address: str, port: int, route: str) -> listener_pb2.Listener:
    manager = hcm_pb2.HttpConnectionManager(http_filters=[
        hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=pack(fault_pb2.HTTPFault())),
        hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router())),
    ])
    manager.rds.config_source.CopyFrom(ads_config_source())
    manager.rds.route_config_name = route
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address=address, port_value=port)),
        api_listener=api_listener_pb2.ApiListener(api_listener=pack(manager)),
    )


class GrpcListeners:
    type_url = types.LISTENER
    proxy_kinds = frozenset({KIND})
    # Names, VIPs and ports of services; Sidecar narrows what is visible.
    depends_on = frozenset({"Service", "ServiceEntry", "Sidecar"})

    def generate(
        self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]
    ) -> list[listener_pb2.Listener]:
        out: dict[str, listener_pb2.Listener] = {}
        for service, port in served(push, proxy):
            vip = next((v for v in service.vips if v and "/" not in v), "0.0.0.0")
            route = route_name(service.hostname, port.port)
            for host in (service.hostname, *alt_names(service.hostname, proxy.dns_domain)):
                name = f"{host}:{port.port}"
                if name not in out:  # a short name belongs to the first service that has it
                    out[name] = api_listener(name, vip, port.port, route)
        return [out[name] for name in sorted(out)]


@hookimpl
def pilotfish_xds_generator() -> GrpcListeners:
    return GrpcListeners()
