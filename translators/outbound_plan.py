"""Which outbound listener each visible service port lands in, by port number.

A sidecar's outbound listeners are keyed by port: one wildcard ``0.0.0.0_P`` shared by the
services that need one, and one ``<VIP>_P`` per TCP service with an address. What a port
needs follows its protocol, as the active sniffers let it be told apart:

- HTTP (declared): the wildcard listener's HCM, routed by Host (RDS ``"P"``);
- auto (undeclared, sniffable): the same HCM for sniffed HTTP, and raw bytes to a VIP go
  to that service (chains matching the VIP as a prefix);
- TLS (declared TLS/HTTPS): matched by SNI when there is no VIP;
- opaque (other TCP, or undeclared where nothing may sniff it: a server-first port, or no
  HTTP sniffer): bytes to the service's cluster, never made to wait on an inspector.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence

import attrs

from pilotfish.core.model import Resolution, Service
from pilotfish.core.protocol import Protocol
from pilotfish.translators.listener_filters import Detection

log = logging.getLogger("pilotfish.lds")


class Kind(enum.Enum):
    HTTP = "http"
    AUTO = "auto"
    TLS = "tls"
    OPAQUE = "opaque"


def kind_of(protocol: Protocol, port: int, detection: Detection) -> Kind | None:
    """How a port of this protocol is served (None: not proxied, i.e. UDP)."""
    if protocol is Protocol.UDP:
        return None
    if protocol.is_http:
        return Kind.HTTP
    if protocol.is_unsupported:
        return Kind.AUTO if detection.sniffs(port) else Kind.OPAQUE
    if protocol in (Protocol.TLS, Protocol.HTTPS):
        return Kind.TLS
    return Kind.OPAQUE


@attrs.define
class PortPlan:
    """Every visible service port with one number, sorted into the listeners it needs."""

    number: int
    http: list[Service] = attrs.Factory(list)  # declared HTTP services
    sniffed: list[tuple[str, Service]] = attrs.Factory(list)  # (VIP, auto service)
    auto_unaddressed: list[Service] = attrs.Factory(list)  # auto services without a VIP
    prefixed: list[tuple[str, Service]] = attrs.Factory(list)  # (CIDR, TCP service)
    unaddressed: list[Service] = attrs.Factory(list)  # TCP services without an address
    vips: dict[str, Service] = attrs.Factory(dict)  # VIP → TCP service
    kinds: dict[str, Kind] = attrs.Factory(dict)  # hostname → kind on this port

    def kind(self, service: Service) -> Kind:
        return self.kinds[service.hostname]

    @property
    def has_http(self) -> bool:
        """Does the wildcard listener carry an HCM (HTTP or sniffable ports)?"""
        return bool(self.http or self.sniffed or self.auto_unaddressed)

    @property
    def opaque_on_wildcard(self) -> bool:
        """Opaque bytes reach the wildcard listener: it must not wait on an inspector."""
        return any(self.kind(s) is Kind.OPAQUE for _, s in self.prefixed) or any(
            self.kind(s) is Kind.OPAQUE for s in self.unaddressed
        )


def plan(services: Sequence[Service], detection: Detection) -> dict[int, PortPlan]:
    plans: dict[int, PortPlan] = {}
    for service in services:
        if service.resolution is Resolution.ALIAS:
            continue  # ExternalName: no listener of its own (RDS points at the target)
        for port in service.ports:
            kind = kind_of(port.protocol, port.port, detection)
            if kind is None:
                continue
            current = plans.setdefault(port.port, PortPlan(port.port))
            current.kinds.setdefault(service.hostname, kind)
            if kind is Kind.HTTP:
                current.http.append(service)
            elif kind is Kind.AUTO:
                if service.vips:
                    current.sniffed.extend((address, service) for address in service.vips)
                else:
                    current.auto_unaddressed.append(service)
            elif not service.vips:
                current.unaddressed.append(service)
            else:
                _add_addresses(current, service)
    return plans


def _add_addresses(plan: PortPlan, service: Service) -> None:
    for address in service.vips:
        if "/" in address:  # a ServiceEntry may give a CIDR: matched as a prefix instead
            plan.prefixed.append((address, service))
        elif address in plan.vips:
            log.warning("outbound %s_%d: %s conflicts with %s; keeping the first",
                        address, plan.number, service.hostname, plan.vips[address].hostname)
        else:
            plan.vips[address] = service
