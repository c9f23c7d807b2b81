"""LDS: the listeners of sidecars and routers (entry point ``lds`` in group ``pilotfish.xds``).

Two generators, one per proxy kind. Sidecars get the capture listeners (``virtualOutbound``
on 15001, ``virtualInbound`` on 15006) plus one unbound listener per outbound port or VIP;
routers get one bound listener per Gateway server port. HTTP listeners point at route
tables by name (RDS over ADS), so a VirtualService HTTP change moves routes only; the names
are the contract with the RDS translator:

- sidecar outbound HTTP and auto-detect port P: ``"P"``;
- gateway plain HTTP port P: ``http.P``; terminated HTTPS:
  ``https.<port>.<portName>.<gatewayName>.<gatewayNamespace>``;
- sidecar inbound routes are inline (``inbound|<targetPort>||``).

A sidecar or gateway also gets ``connect_originate`` when a service it sees has pods that
take only HBONE (`hbone_outbound`); a sidecar gets ``connect_terminate`` and
``main_internal`` when its own pod takes HBONE (`hbone_inbound`).

Which inspectors the listeners may use comes from the active sniffers (group
``pilotfish.sniffers``), handed to ``pilotfish_xds_generator`` by the plugin manager: a
sniffer removed from the mesh config takes its Envoy listener filter with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoy.config.listener.v3 import listener_pb2

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import HBONE_ENDPOINTS, PushContext
from pilotfish.core.sniffing import Sniffer
from pilotfish.core.xds import types
from pilotfish.translators import hbone_inbound, hbone_outbound, stats_module, telemetry
from pilotfish.translators.ambient.waypoint_listeners import connect_originate
from pilotfish.translators.gateway_listeners import gateway_listeners
from pilotfish.translators.listener_filters import ALL, Detection
from pilotfish.translators.sidecar_inbound import ingress_listeners, virtual_inbound
from pilotfish.translators.sidecar_outbound import outbound_listeners


class _Listeners:
    type_url = types.LISTENER
    # Services and ServiceEntries shape the outbound listeners, Sidecar narrows them,
    # VirtualService tcp/tls routes are resolved into listeners, Gateways make router
    # listeners. PeerAuthentication shapes inbound chains, AuthorizationPolicy and
    # RequestAuthentication become their RBAC and JWT filters. Workload objects are absent
    # on purpose: inbound ports come from the proxy's own metadata, and endpoint churn must
    # not rebuild listeners. A DestinationRule's tunnel goes on tcp_proxy; Telemetry shapes
    # the access loggers.
    depends_on = frozenset({
        "Gateway", "Service", "ServiceEntry", "Sidecar", "VirtualService",
        "PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication",
        "DestinationRule", "Telemetry", HBONE_ENDPOINTS,
    })

    def __init__(self, detection: Detection = ALL) -> None:
        # Fixed for the generator's life: the plugin set does not change while it runs.
        self.detection = detection


class SidecarListeners(_Listeners):
    """virtualOutbound, virtualInbound, then the per-port outbound listeners."""

    proxy_kinds = frozenset({"sidecar"})

    def generate(
        self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]
    ) -> list[listener_pb2.Listener]:
        outbound = outbound_listeners(push, proxy, self.detection)
        listeners = [outbound[0], virtual_inbound(push, proxy, self.detection),
                     *outbound[1:], *ingress_listeners(push, proxy),
                     *hbone_inbound.listeners(push, proxy, self.detection)]
        if hbone_outbound.needed(push, push.visible_services(proxy)):
            listeners.append(connect_originate())
        telemetry.apply(push, proxy, listeners)
        stats_module.apply(proxy, listeners)
        return listeners


class RouterListeners(_Listeners):
    """One bound listener per port of the Gateway servers that select the router."""

    proxy_kinds = frozenset({"router"})

    def generate(
        self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]
    ) -> list[listener_pb2.Listener]:
        listeners = gateway_listeners(push, proxy, self.detection)
        if hbone_outbound.needed(push, push.visible_services(proxy)):
            listeners.append(connect_originate())
        telemetry.apply(push, proxy, listeners)
        stats_module.apply(proxy, listeners)
        return listeners


@hookimpl
def pilotfish_xds_generator(sniffers: Sequence[Sniffer]) -> list[_Listeners]:
    detection = Detection.of(sniffers)
    return [SidecarListeners(detection), RouterListeners(detection)]
