"""What the proxyless gRPC generators share: which services and ports they serve."""

from __future__ import annotations

from collections.abc import Iterator

from pilotfish.core.model import Resolution, Service, ServicePort
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext

KIND = "grpc"


def served(push: PushContext, proxy: Proxy) -> Iterator[tuple[Service, ServicePort]]:
    """The visible (service, port) pairs a gRPC client can call: services whose endpoints
    are addresses (not DNS names or ExternalName aliases), on HTTP or undeclared ports."""
    for service in push.visible_services(proxy):
        if service.resolution not in (Resolution.CLIENT_SIDE_LB, Resolution.PASSTHROUGH):
            continue
        for port in service.ports:
            if port.protocol.is_http or port.protocol.is_unsupported:
                yield service, port


def route_name(hostname: str, port: int) -> str:
    """The route table (and cluster-less target) name: ``FQDN:PORT``, as Istio names it."""
    return f"{hostname}:{port}"
