"""The service registry model: services, their ports, workloads and endpoints.

These are snapshots (frozen attrs classes) derived from config objects by
`pilotfish.core.registry`; translators read them through the push context.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from pilotfish.core.addresses import is_ip as is_ip  # where it was; ztunnel imports it there
from pilotfish.core.objects import ConfigKey
from pilotfish.core.protocol import Protocol

DEFAULT_DOMAIN = "cluster.local"


class Resolution(enum.Enum):
    CLIENT_SIDE_LB = "ClientSideLB"  # EDS
    DNS_LB = "DNSLB"  # STRICT_DNS
    DNS_ROUND_ROBIN_LB = "DNSRoundRobinLB"  # LOGICAL_DNS
    PASSTHROUGH = "Passthrough"  # ORIGINAL_DST
    ALIAS = "Alias"  # ExternalName: no cluster of its own


class Health(enum.Enum):
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    DRAINING = "DRAINING"


@attrs.frozen
class ServicePort:
    name: str
    port: int
    protocol: Protocol
    # Kubernetes targetPort: a number, a container port name, or None (= port).
    target_port: int | str | None = None

    def resolve_target(self, named_ports: Mapping[str, int]) -> int | None:
        """The port traffic goes to on a workload with these named container ports
        (None: the targetPort names a port the workload does not declare)."""
        target = self.target_port
        if target is None:
            return self.port
        if isinstance(target, int):
            return target
        if target.isdigit():
            return int(target)
        return named_ports.get(target)


@attrs.frozen
class Service:
    hostname: str
    namespace: str
    name: str
    ports: tuple[ServicePort, ...]
    vips: tuple[str, ...] = ()
    resolution: Resolution = Resolution.CLIENT_SIDE_LB
    mesh_external: bool = False
    # Labels that select the workloads behind it (None: endpoints are given explicitly).
    selector: Mapping[str, str] | None = None
    export_to: frozenset[str] = frozenset({"*"})
    origin: ConfigKey | None = None
    external_name: str = ""  # for ExternalName services (resolution ALIAS)
    labels: Mapping[str, str] = attrs.field(factory=dict)

    def port(self, number: int) -> ServicePort | None:
        for port in self.ports:
            if port.port == number:
                return port
        return None

    def port_by_name(self, name: str) -> ServicePort | None:
        for port in self.ports:
            if port.name == name:
                return port
        return None


@attrs.frozen
class Workload:
    """A Pod or a WorkloadEntry: something with an address and labels that runs an app."""

    kind: str  # "Pod" | "WorkloadEntry"
    name: str
    namespace: str
    address: str
    labels: Mapping[str, str]
    service_account: str = "default"
    # Named ports: a Pod's container ports, or a WorkloadEntry's ``ports`` map.
    ports: Mapping[str, int] = attrs.field(factory=dict)
    locality: str = ""
    weight: int = 1
    network: str = ""
    healthy: bool = True
    tls_mode: str = "disabled"  # "istio" when the workload has a sidecar that speaks mTLS
    annotations: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Endpoint:
    """One address:port behind one service port."""

    address: str
    port: int  # the target port
    service_port: int
    labels: Mapping[str, str] = attrs.field(factory=dict)
    namespace: str = ""
    service_account: str = ""
    workload_name: str = ""
    locality: str = ""
    weight: int = 1
    health: Health = Health.HEALTHY
    tls_mode: str = "disabled"
    network: str = ""


REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"
HOSTNAME_LABEL = "kubernetes.io/hostname"
# Node labels from before topology.kubernetes.io, read when the current ones are absent.
_LEGACY = {REGION_LABEL: "failure-domain.beta.kubernetes.io/region",
           ZONE_LABEL: "failure-domain.beta.kubernetes.io/zone"}
# A pod's own locality (region.zone.subzone, or with slashes), which replaces its Node's.
POD_LOCALITY_LABELS = ("topology.istio.io/locality", "istio-locality")


def locality_of(labels: Mapping[str, str]) -> str:
    """``region/zone/subzone`` from Kubernetes' topology labels (a Node's, or a Pod's in
    file mode); "" when there are none."""
    parts = [labels.get(key) or labels.get(_LEGACY.get(key, ""), "") or ""
             for key in (REGION_LABEL, ZONE_LABEL, SUBZONE_LABEL)]
    return "/".join(parts).rstrip("/")


def workload_locality(labels: Mapping[str, str], node_locality: str = "") -> str:
    """Where a Pod runs, as Istio reads it: its own locality label, else its Node's
    topology labels, else topology labels of its own."""
    own = next((labels[k] for k in POD_LOCALITY_LABELS if labels.get(k)), "")
    if own:
        return own if "/" in own else own.replace(".", "/")
    return node_locality or locality_of(labels)


def endpoint_labels(labels: Mapping[str, str], locality: str, node_name: str = ""
                    ) -> dict[str, str]:
    """The labels a Pod's endpoints carry, as Istio's registry augments them: its own, the
    non-empty parts of its locality as topology labels, and its Node's name (so subsets
    and failoverPriority can select on them)."""
    out = dict(labels)
    for key, value in zip((REGION_LABEL, ZONE_LABEL, SUBZONE_LABEL),
                          [*locality.split("/"), "", ""][:3], strict=True):
        if value:
            out[key] = value
    if node_name:
        out[HOSTNAME_LABEL] = node_name
    return out


def fqdn(name: str, namespace: str, domain: str = DEFAULT_DOMAIN) -> str:
    return f"{name}.{namespace}.svc.{domain}"


def resolve_host(host: str, namespace: str, domain: str = DEFAULT_DOMAIN) -> str:
    """Istio's short-name rule: a name without dots is a service in the given namespace."""
    if not host or host == "*" or "." in host:
        return host
    return fqdn(host, namespace, domain)


def host_matches(pattern: str, host: str) -> bool:
    """Does a (possibly wildcard) host pattern match a concrete or wildcard host?

    ``*`` matches everything, ``*.example.com`` matches ``a.example.com`` and
    ``*.b.example.com``; otherwise names must be equal.
    """
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*"):
        suffix = pattern[1:]
        if host.startswith("*"):
            return host[1:].endswith(suffix)
        return host.endswith(suffix)
    if host.startswith("*"):
        return pattern.endswith(host[1:])
    return False


def labels_match(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """A selector matches labels that contain all its pairs (an empty selector matches all)."""
    if not selector:
        return True
    return all(labels.get(k) == v for k, v in selector.items())
