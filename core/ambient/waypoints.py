"""Which waypoint a service or a workload uses, as istiod decides it
(``pilot/pkg/serviceregistry/kube/controller/ambient/waypoints.go``, istio/api ``labels.yaml``).

A waypoint is a Gateway API Gateway of class ``istio-waypoint``. An object names one with
``istio.io/use-waypoint`` (and ``istio.io/use-waypoint-namespace`` for another namespace); the
object's own label wins over its namespace's, and ``none`` on the object means no waypoint even
when the namespace names one. A waypoint takes the kinds of traffic its
``istio.io/waypoint-for`` label allows (``service`` by default, ``workload``, ``all``,
``none``): a service binds only to a waypoint for ``service`` or ``all``, a workload only to one
for ``workload`` or ``all``; a GatewayClass's label is its Gateways' default. A name with no
such Gateway binds nothing (istiod reports it in the
object's status). Waypoints themselves never use a waypoint. Sans-IO.

Where ztunnel reaches a waypoint: the Gateway's first IP status address, as istiod reads it;
istiod ignores a Gateway with no status address yet, but pilotfish may run where nothing writes
Gateway status (file mode), so it falls back to the VIP of the waypoint's Service, then to that
Service's hostname.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

import attrs

from pilotfish.core.model import DEFAULT_DOMAIN, fqdn
from pilotfish.core.objects import ConfigObject

USE_WAYPOINT_LABEL = "istio.io/use-waypoint"
USE_WAYPOINT_NAMESPACE_LABEL = "istio.io/use-waypoint-namespace"
WAYPOINT_FOR_LABEL = "istio.io/waypoint-for"
INGRESS_USE_WAYPOINT_LABEL = "istio.io/ingress-use-waypoint"
MANAGED_LABEL = "gateway.istio.io/managed"
MESH_CONTROLLER = "istio.io-mesh-controller"  # the value on a waypoint's own pods and Service
WAYPOINT_CLASS = "istio-waypoint"
HBONE_PORT = 15008
SERVICE, WORKLOAD, ALL, NONE = "service", "workload", "all", "none"


@attrs.frozen
class Waypoint:
    """A waypoint Gateway and where ztunnel reaches it."""

    name: str
    namespace: str
    traffic_type: str  # service | workload | all | none
    address: str = ""  # an IP: the Gateway's status address, else its Service's VIP
    hostname: str = ""  # when there is no IP: the Service's name, NAME.NS.svc.DOMAIN

    def accepts(self, kind: str) -> bool:
        return self.traffic_type in (kind, ALL)


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return ""


def index(gateways: Iterable[ConfigObject], service_vips: Mapping[str, tuple[str, ...]],
          domain: str = DEFAULT_DOMAIN, classes: Iterable[ConfigObject] = ()
          ) -> dict[tuple[str, str], Waypoint]:
    """The waypoints among Gateway API Gateways, by (namespace, name). ``service_vips``: the
    VIPs of each service by hostname (the waypoint's Service has the Gateway's name).
    ``classes``: the GatewayClasses, whose ``istio.io/waypoint-for`` label is the default
    of their Gateways' (a Gateway's own label wins)."""
    class_for = {c.name: c.labels[WAYPOINT_FOR_LABEL] for c in classes
                 if WAYPOINT_FOR_LABEL in c.labels}
    out = {}
    for gateway in gateways:
        class_name = gateway.spec.get("gatewayClassName")
        if class_name != WAYPOINT_CLASS:
            continue
        hostname = fqdn(gateway.name, gateway.namespace, domain)
        status = (gateway.body.get("status") or {}).get("addresses") or ()
        address = next((ip for entry in status if (ip := _ip(str(entry.get("value"))))),
                       "") or next(iter(service_vips.get(hostname, ())), "")
        out[(gateway.namespace, gateway.name)] = Waypoint(
            name=gateway.name, namespace=gateway.namespace,
            traffic_type=gateway.labels.get(WAYPOINT_FOR_LABEL,
                                            class_for.get(class_name, SERVICE)),
            address=address, hostname="" if address else hostname)
    return out


def _named(labels: Mapping[str, str], namespace: str) -> tuple[str, str] | None:
    name = labels.get(USE_WAYPOINT_LABEL)
    if not name:
        return None
    return (labels.get(USE_WAYPOINT_NAMESPACE_LABEL) or namespace, name)


def binding(labels: Mapping[str, str], namespace: str, namespace_labels: Mapping[str, str],
            waypoints: Mapping[tuple[str, str], Waypoint], kind: str) -> Waypoint | None:
    """The waypoint an object of ``kind`` (``service`` or ``workload``) uses, or None."""
    if labels.get(MANAGED_LABEL) == MESH_CONTROLLER:
        return None
    named = _named(labels, namespace)
    if named is None:
        named = _named(namespace_labels, namespace)
    if named is None or named[1] == NONE:
        return None
    waypoint = waypoints.get(named)
    return waypoint if waypoint is not None and waypoint.accepts(kind) else None


def ingress_uses_waypoint(labels: Mapping[str, str], namespace_labels: Mapping[str, str]) -> bool:
    value = labels.get(INGRESS_USE_WAYPOINT_LABEL) or namespace_labels.get(
        INGRESS_USE_WAYPOINT_LABEL, "")
    return value.lower() == "true"
