"""Services, workloads and endpoints computed from config objects.

pilotfish plays Kubernetes' endpoints controller here: a Service with a selector gets the
Pods and WorkloadEntries it selects as endpoints; explicit Endpoints and EndpointSlices
are honoured for Services without a selector. ServiceEntries become one service per host,
with inline endpoints or a workload selector.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import attrs

from pilotfish.core import protocol
from pilotfish.core.guard import Guard
from pilotfish.core.model import (
    DEFAULT_DOMAIN,
    Endpoint,
    Health,
    Resolution,
    Service,
    ServicePort,
    Workload,
    endpoint_labels,
    fqdn,
    labels_match,
    locality_of,
    workload_locality,
)
from pilotfish.core.objects import ConfigObject
from pilotfish.core.store import ConfigError

T = TypeVar("T")

TLS_MODE_LABEL = "security.istio.io/tlsMode"

_SE_RESOLUTION = {
    "NONE": Resolution.PASSTHROUGH,
    "STATIC": Resolution.CLIENT_SIDE_LB,
    "DNS": Resolution.DNS_LB,
    "DNS_ROUND_ROBIN": Resolution.DNS_ROUND_ROBIN_LB,
    "DYNAMIC_DNS": Resolution.DNS_LB,
}


@attrs.frozen
class Registry:
    """Everything the service registry knows at one moment."""

    services: Mapping[str, Service]  # by hostname
    endpoints: Mapping[tuple[str, int], tuple[Endpoint, ...]]  # (hostname, service port)
    workloads: tuple[Workload, ...]
    # Objects that could not be indexed (left out, the rest indexed): see core/guard.py.
    problems: tuple[ConfigError, ...] = ()

    def endpoints_of(self, hostname: str, port: int) -> tuple[Endpoint, ...]:
        return self.endpoints.get((hostname, port), ())


def _export_to(spec: Mapping[str, Any], annotations: Mapping[str, str]) -> frozenset[str]:
    values = spec.get("exportTo")
    if not values and annotations.get("networking.istio.io/exportTo"):
        values = [v.strip() for v in annotations["networking.istio.io/exportTo"].split(",")]
    return frozenset(values) if values else frozenset({"*"})


def _per_object(build: Callable[..., T]) -> Callable[..., T]:
    """``build(obj, *args)``, kept for as long as ``obj`` lives. A push rebuilds the registry
    from every object, and nearly all are the very objects the last push read: objects
    are immutable, and a changed file is read into new ones."""
    kept: weakref.WeakKeyDictionary[ConfigObject, tuple[tuple[Any, ...], T]] = (
        weakref.WeakKeyDictionary())

    def cached(obj: ConfigObject, *args: Any) -> T:
        hit = kept.get(obj)
        if hit is not None and hit[0] == args:
            return hit[1]
        value = build(obj, *args)
        kept[obj] = (args, value)
        return value

    return cached


@_per_object
def _pod_workload(obj: ConfigObject, node_locality: str = "") -> Workload | None:
    """A Pod's workload; ``node_locality``: that of the Node it runs on (``spec.nodeName``)."""
    status = obj.body.get("status") or {}
    address = status.get("podIP")
    if not address:
        return None
    spec = obj.spec
    ports: dict[str, int] = {}
    for container in spec.get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") and port.get("containerPort"):
                ports[str(port["name"])] = int(port["containerPort"])
    healthy = True
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready" and str(cond.get("status")).lower() == "false":
            healthy = False
    if status.get("phase") in ("Failed", "Succeeded", "Pending"):
        healthy = False
    if obj.metadata.get("deletionTimestamp"):
        healthy = False  # terminating: Kubernetes' endpoints take it out of the ready ones
    locality = workload_locality(obj.labels, node_locality)
    labels = endpoint_labels(obj.labels, locality, str(spec.get("nodeName") or ""))
    return Workload(
        kind="Pod",
        name=obj.name,
        namespace=obj.namespace,
        address=str(address),
        labels=labels,
        service_account=str(spec.get("serviceAccountName") or spec.get("serviceAccount")
                            or "default"),
        ports=ports,
        healthy=healthy,
        tls_mode=labels.get(TLS_MODE_LABEL, "disabled"),
        annotations=dict(obj.annotations),
        locality=locality,
    )


def entry_workload(spec: Mapping[str, Any], name: str, namespace: str) -> Workload:
    """A WorkloadEntry's spec (or a ServiceEntry's inline endpoint) as a workload."""
    labels = dict(spec.get("labels") or {})
    service_account = str(spec.get("serviceAccount") or "")
    tls_mode = labels.get(TLS_MODE_LABEL) or ("istio" if service_account else "disabled")
    return Workload(
        kind="WorkloadEntry",
        name=name,
        namespace=namespace,
        address=str(spec.get("address") or ""),
        labels=labels,
        service_account=service_account or "default",
        ports={str(k): int(v) for k, v in (spec.get("ports") or {}).items()},
        locality=str(spec.get("locality") or ""),
        weight=int(spec.get("weight") or 1),
        network=str(spec.get("network") or ""),
        tls_mode=tls_mode,
    )


def _endpoint(workload: Workload, port: int, service_port: int) -> Endpoint:
    return Endpoint(
        address=workload.address,
        port=port,
        service_port=service_port,
        labels=workload.labels,
        namespace=workload.namespace,
        service_account=workload.service_account,
        workload_name=workload.name,
        locality=workload.locality,
        weight=workload.weight,
        health=Health.HEALTHY if workload.healthy else Health.UNHEALTHY,
        tls_mode=workload.tls_mode,
        network=workload.network,
    )


def _target_port(port: ServicePort, workload: Workload) -> int | None:
    # A WorkloadEntry's ``ports`` map is keyed by service port name and wins.
    if workload.kind == "WorkloadEntry" and port.name in workload.ports:
        return workload.ports[port.name]
    return port.resolve_target(workload.ports)


@_per_object
def _kube_service(obj: ConfigObject, domain: str) -> Service:
    spec = obj.spec
    ports = []
    for raw in spec.get("ports") or []:
        number = int(raw.get("port") or 0)
        name = str(raw.get("name") or "")
        target = raw.get("targetPort")
        ports.append(ServicePort(
            name=name,
            port=number,
            protocol=protocol.from_port(name, number, raw.get("appProtocol"), raw.get("protocol")),
            target_port=int(target) if isinstance(target, int) else (
                str(target) if target is not None else None
            ),
        ))
    cluster_ip = spec.get("clusterIP")
    ips = [ip for ip in (spec.get("clusterIPs") or [cluster_ip]) if ip and ip != "None"]
    resolution = Resolution.CLIENT_SIDE_LB
    external_name = ""
    if spec.get("type") == "ExternalName":
        resolution = Resolution.ALIAS
        external_name = str(spec.get("externalName") or "")
    elif cluster_ip == "None":
        resolution = Resolution.PASSTHROUGH
    selector = spec.get("selector")
    return Service(
        hostname=fqdn(obj.name, obj.namespace, domain),
        namespace=obj.namespace,
        name=obj.name,
        ports=tuple(ports),
        vips=tuple(str(ip) for ip in ips),
        resolution=resolution,
        mesh_external=resolution is Resolution.ALIAS,
        selector=dict(selector) if isinstance(selector, dict) else None,
        export_to=_export_to({}, obj.annotations),
        origin=obj.key,
        external_name=external_name,
        labels=dict(obj.labels),
    )


def _entry_services(obj: ConfigObject) -> list[Service]:
    spec = obj.spec
    ports = tuple(
        ServicePort(
            name=str(p.get("name") or ""),
            port=int(p.get("number") or 0),
            protocol=protocol.parse(str(p.get("protocol") or "")),
            target_port=int(p["targetPort"]) if p.get("targetPort") else None,
        )
        for p in spec.get("ports") or []
    )
    resolution = _SE_RESOLUTION.get(str(spec.get("resolution") or "NONE"), Resolution.PASSTHROUGH)
    selector = (spec.get("workloadSelector") or {}).get("labels")
    return [
        Service(
            hostname=str(host),
            namespace=obj.namespace,
            name=obj.name,
            ports=ports,
            vips=tuple(str(a) for a in spec.get("addresses") or ()),
            resolution=resolution,
            mesh_external=str(spec.get("location") or "MESH_EXTERNAL") == "MESH_EXTERNAL",
            selector=dict(selector) if selector else None,
            export_to=_export_to(spec, obj.annotations),
            origin=obj.key,
            labels=dict(obj.labels),
        )
        for host in spec.get("hosts") or []
    ]


def build(objects: Iterable[ConfigObject], domain: str = DEFAULT_DOMAIN) -> Registry:
    by_kind: dict[str, list[ConfigObject]] = defaultdict(list)
    for obj in objects:
        by_kind[obj.kind].append(obj)
    guard = Guard()

    workloads: list[Workload] = []
    nodes = {obj.name: locality_of(obj.labels) for obj in by_kind["Node"]}
    for obj in by_kind["Pod"]:
        pod = guard.run(obj, _pod_workload, obj, nodes.get(str(obj.spec.get("nodeName")), ""))
        if pod is not None:
            workloads.append(pod)
    for obj in by_kind["WorkloadEntry"]:
        entry = guard.run(obj, entry_workload, obj.spec, obj.name, obj.namespace)
        if entry is not None:
            workloads.append(entry)
    by_labels = _WorkloadIndex(workloads)

    services: dict[str, Service] = {}
    endpoints: dict[tuple[str, int], list[Endpoint]] = defaultdict(list)

    # Kubernetes Services first: they win a hostname clash with a ServiceEntry.
    explicit = _explicit_endpoints(by_kind, guard)
    for obj in sorted(by_kind["Service"], key=lambda o: (o.namespace, o.name)):
        found = guard.run(obj, _service_endpoints, obj, domain, by_labels, explicit)
        if found is not None and found[0].hostname not in services:
            services[found[0].hostname] = found[0]
            for key, items in found[1].items():
                endpoints[key] += items

    for obj in sorted(by_kind["ServiceEntry"], key=lambda o: (o.creation, o.namespace, o.name)):
        entries = guard.run(obj, _entry_endpoints, obj, by_labels)
        for service, found_endpoints in entries or ():
            if service.hostname in services:
                continue
            services[service.hostname] = service
            for key, items in found_endpoints.items():
                endpoints[key] += items

    return Registry(
        services=services,
        endpoints={key: tuple(value) for key, value in endpoints.items()},
        workloads=tuple(workloads),
        problems=tuple(guard.errors),
    )


Found = dict[tuple[str, int], list[Endpoint]]


def _service_endpoints(obj: ConfigObject, domain: str, by_labels: _WorkloadIndex,
                       explicit: Mapping[tuple[str, str, str], list[tuple[str, int, bool]]],
                       ) -> tuple[Service, Found]:
    """A Kubernetes Service and its endpoints: selected workloads, else explicit ones."""
    service = _kube_service(obj, domain)
    endpoints: Found = defaultdict(list)
    if service.resolution is Resolution.ALIAS:
        return service, endpoints
    if service.selector is not None:
        _select(service, by_labels.candidates(service.namespace, service.selector), endpoints)
        return service, endpoints
    for port in service.ports:
        for address, target, ready in explicit.get(
            (service.namespace, service.name, port.name), ()
        ):
            endpoints[(service.hostname, port.port)].append(Endpoint(
                address=address, port=target, service_port=port.port,
                namespace=service.namespace,
                health=Health.HEALTHY if ready else Health.UNHEALTHY,
            ))
    return service, endpoints


def _entry_endpoints(obj: ConfigObject, by_labels: _WorkloadIndex
                     ) -> list[tuple[Service, Found]]:
    """A ServiceEntry's services (one per host) with their endpoints."""
    out = []
    for service in _entry_services(obj):
        endpoints: Found = defaultdict(list)
        out.append((service, endpoints))
        if service.selector is not None:
            _select(service, by_labels.candidates(service.namespace, service.selector),
                    endpoints)
            continue
        inline = obj.spec.get("endpoints") or []
        for index, raw in enumerate(inline):
            workload = entry_workload(raw, f"{obj.name}-{index}", obj.namespace)
            for port in service.ports:
                target = workload.ports.get(port.name) or (
                    port.target_port if isinstance(port.target_port, int) else port.port
                )
                endpoints[(service.hostname, port.port)].append(
                    _endpoint(workload, target, port.port)
                )
        if not inline and service.resolution in (
            Resolution.DNS_LB, Resolution.DNS_ROUND_ROBIN_LB
        ) and not service.hostname.startswith("*"):
            for port in service.ports:
                target = port.target_port if isinstance(port.target_port, int) else port.port
                endpoints[(service.hostname, port.port)].append(Endpoint(
                    address=service.hostname, port=target, service_port=port.port,
                    namespace=service.namespace,
                ))
    return out


class _WorkloadIndex:
    """Workloads by namespace and label pair, so a selector looks at few candidates rather
    than every workload (services x workloads is quadratic at a thousand of each)."""

    def __init__(self, workloads: Iterable[Workload]) -> None:
        self._by_ns: dict[str, list[Workload]] = defaultdict(list)
        self._by_label: dict[tuple[str, str, str], list[Workload]] = defaultdict(list)
        for workload in workloads:
            self._by_ns[workload.namespace].append(workload)
            for key, value in workload.labels.items():
                self._by_label[(workload.namespace, key, value)].append(workload)

    def candidates(self, namespace: str, selector: Mapping[str, str] | None) -> list[Workload]:
        if not selector:
            return self._by_ns.get(namespace, [])
        lists = [self._by_label.get((namespace, k, v), []) for k, v in selector.items()]
        return min(lists, key=len)


def _select(
    service: Service,
    candidates: list[Workload],
    endpoints: dict[tuple[str, int], list[Endpoint]],
) -> None:
    for workload in candidates:
        if not labels_match(service.selector, workload.labels) or not workload.address:
            continue
        for port in service.ports:
            target = _target_port(port, workload)
            if target is None:
                continue  # named targetPort the workload does not declare
            endpoints[(service.hostname, port.port)].append(
                _endpoint(workload, target, port.port)
            )


Explicit = dict[tuple[str, str, str], list[tuple[str, int, bool]]]


def _explicit_endpoints(by_kind: Mapping[str, list[ConfigObject]], guard: Guard) -> Explicit:
    """(namespace, service, port name) → [(address, port, ready)] from Endpoints/Slices."""
    out: Explicit = defaultdict(list)
    for obj in by_kind.get("Endpoints", []):
        for key, items in (guard.run(obj, _from_endpoints, obj) or {}).items():
            out[key] += items
    for obj in by_kind.get("EndpointSlice", []):
        for key, items in (guard.run(obj, _from_slice, obj) or {}).items():
            out[key] += items
    return out


def _from_endpoints(obj: ConfigObject) -> Explicit:
    out: Explicit = defaultdict(list)
    for subset in obj.body.get("subsets") or []:
        ports = subset.get("ports") or []
        for ready, key in ((True, "addresses"), (False, "notReadyAddresses")):
            for addr in subset.get(key) or []:
                for port in ports:
                    out[(obj.namespace, obj.name, str(port.get("name") or ""))].append(
                        (str(addr.get("ip")), int(port.get("port") or 0), ready)
                    )
    return out


def _from_slice(obj: ConfigObject) -> Explicit:
    out: Explicit = defaultdict(list)
    service = obj.labels.get("kubernetes.io/service-name")
    if not service:
        return out
    ports = obj.body.get("ports") or []
    for ep in obj.body.get("endpoints") or []:
        conditions = ep.get("conditions") or {}
        ready = conditions.get("ready") is not False
        for address in ep.get("addresses") or []:
            for port in ports:
                out[(obj.namespace, service, str(port.get("name") or ""))].append(
                    (str(address), int(port.get("port") or 0), ready)
                )
    return out
