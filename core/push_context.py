"""The push context: an immutable snapshot of everything translators read.

Built once per push from the store (plus the mesh settings), then shared by every proxy's
generation. All Istio lookup rules live here — which services a proxy sees (exportTo and
Sidecar egress), which DestinationRule applies, which Gateways select a router, which
VirtualServices bind to which gateway — so that translators only translate.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from typing import Any, TypeVar

import attrs

from pilotfish.core import gateway_api, security_policies, telemetry
from pilotfish.core import registry as registry_mod
from pilotfish.core.ambient import enrollment
from pilotfish.core.guard import Guard
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.model import (
    Endpoint,
    Service,
    ServicePort,
    Workload,
    host_matches,
    labels_match,
    resolve_host,
)
from pilotfish.core.objects import ConfigKey, ConfigObject
from pilotfish.core.proxy import Proxy, ProxyType
from pilotfish.core.security.identity import spiffe_id
from pilotfish.core.store import ConfigError

T = TypeVar("T")
log = logging.getLogger("pilotfish.push")

MESH_GATEWAY = "mesh"
# A pseudo config kind: "the service accounts behind some service changed". Clusters name
# those accounts as the SANs their mTLS expects, so CDS depends on workloads through this
# (see `PushContext.derived_changes`) and not on every Pod or WorkloadEntry event.
SERVICE_IDENTITIES = "ServiceIdentities"
# A pseudo kind too: "which services have an endpoint that takes only HBONE changed". A
# sidecar's or gateway's cluster carries the HBONE transport socket only for those (see
# `hbone_backed`).
HBONE_ENDPOINTS = "HboneEndpoints"
_WORKLOAD_KINDS = frozenset({"Pod", "WorkloadEntry"})
# Kinds that make endpoints (and, through ServiceEntry hosts and Service selectors, nothing
# but endpoints): a batch of these alone can be applied service by service
# (`PushContext.endpoint_changes`).
ENDPOINT_KINDS = frozenset({"Pod", "WorkloadEntry", "Endpoints", "EndpointSlice", "Node"})


def _exported_to(export_to: Iterable[str], owner_ns: str, viewer_ns: str) -> bool:
    for entry in export_to:
        if entry == "*" or entry == viewer_ns or (entry == "." and owner_ns == viewer_ns):
            return True
    return False


def _export_set(spec: Mapping[str, Any]) -> frozenset[str]:
    values = spec.get("exportTo")
    return frozenset(values) if values else frozenset({"*"})


def gateway_ref(ref: str, namespace: str) -> str:
    """A VirtualService's ``gateways`` entry → ``namespace/name`` (or ``mesh``): the one
    reading of gateway names, which the TCP routes and the analyzers share."""
    if ref == MESH_GATEWAY:
        return ref
    if "/" in ref:
        return ref
    if "." in ref:  # legacy "name.namespace.svc.cluster.local"
        name, _, rest = ref.partition(".")
        return f"{rest.split('.')[0]}/{name}"
    return f"{namespace}/{ref}"


@attrs.frozen
class VirtualService:
    name: str
    namespace: str
    hosts: tuple[str, ...]  # resolved: short names expanded to FQDNs
    gateways: frozenset[str]  # "ns/name" or "mesh"
    spec: Mapping[str, Any]
    export_to: frozenset[str]
    obj: ConfigObject

    @property
    def key(self) -> ConfigKey:
        return self.obj.key

    @property
    def http(self) -> Sequence[Mapping[str, Any]]:
        return self.spec.get("http") or ()

    @property
    def tcp(self) -> Sequence[Mapping[str, Any]]:
        return self.spec.get("tcp") or ()

    @property
    def tls(self) -> Sequence[Mapping[str, Any]]:
        return self.spec.get("tls") or ()

    @property
    def config_path(self) -> str:
        return (
            f"/apis/networking.istio.io/v1/namespaces/{self.namespace}/virtual-service/{self.name}"
        )


@attrs.frozen
class DestinationRule:
    name: str
    namespace: str
    host: str  # resolved
    spec: Mapping[str, Any]
    export_to: frozenset[str]
    selector: Mapping[str, str] | None
    obj: ConfigObject

    @property
    def traffic_policy(self) -> Mapping[str, Any]:
        return self.spec.get("trafficPolicy") or {}

    @property
    def subsets(self) -> Sequence[Mapping[str, Any]]:
        return self.spec.get("subsets") or ()

    def subset(self, name: str) -> Mapping[str, Any] | None:
        for subset in self.subsets:
            if subset.get("name") == name:
                return subset
        return None

    @property
    def config_path(self) -> str:
        return (
            f"/apis/networking.istio.io/v1/namespaces/{self.namespace}/destination-rule/{self.name}"
        )


@attrs.frozen
class GatewayServer:
    gateway: Gateway
    index: int
    port: int
    protocol: str
    port_name: str
    hosts: tuple[str, ...]  # as written: "host" or "ns/host"
    tls: Mapping[str, Any]
    bind: str
    raw: Mapping[str, Any]


@attrs.frozen
class Gateway:
    name: str
    namespace: str
    selector: Mapping[str, str]
    spec: Mapping[str, Any]
    obj: ConfigObject
    # Converted from a Gateway API Gateway: selects proxies of its own namespace only.
    own_namespace: bool = False

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def servers(self) -> list[GatewayServer]:
        out = []
        for index, raw in enumerate(self.spec.get("servers") or []):
            port = raw.get("port") or {}
            out.append(GatewayServer(
                gateway=self,
                index=index,
                port=int(port.get("number") or 0),
                protocol=str(port.get("protocol") or "HTTP").upper(),
                port_name=str(port.get("name") or ""),
                hosts=tuple(str(h) for h in raw.get("hosts") or ()),
                tls=raw.get("tls") or {},
                bind=str(raw.get("bind") or ""),
                raw=raw,
            ))
        return out


@attrs.frozen
class SidecarScope:
    """What one Sidecar resource says about a proxy's outbound view."""

    namespace: str
    egress_hosts: tuple[tuple[str, str], ...]  # (namespace pattern, dns pattern)
    outbound_traffic_policy: str
    obj: ConfigObject | None = None
    # ``~ns/host`` entries, as (namespace pattern, dns pattern): left out of what the
    # others import (``~/host`` is ``*`` for the namespace; ``~/*`` imports nothing).
    excluded: tuple[tuple[str, str], ...] = ()

    def imports(self, service_ns: str, hostname: str) -> bool:
        if any(self._in_namespace(ns, service_ns) and _covers(host, hostname)
               for ns, host in self.excluded):
            return False
        return any(self._in_namespace(ns, service_ns) and host_matches(host, hostname)
                   for ns, host in self.egress_hosts)

    def _in_namespace(self, pattern: str, namespace: str) -> bool:
        return pattern == "*" or namespace == (self.namespace if pattern == "." else pattern)


def _covers(pattern: str, host: str) -> bool:
    """Does a host pattern take in every name of ``host`` (itself perhaps a wildcard)?"""
    if pattern == "*" or pattern == host:
        return True
    return pattern.startswith("*") and host.lstrip("*").endswith(pattern[1:])


@attrs.frozen
class IngressListener:
    """One ``ingress[]`` entry of the proxy's Sidecar: a port it accepts and where the
    traffic goes (``defaultEndpoint``), replacing the ports its services would give."""

    port: int
    protocol: str
    name: str
    address: str  # 127.0.0.1, or 0.0.0.0 (the workload's own IP); "" for a unix socket
    target_port: int
    unix_path: str = ""
    tls: Mapping[str, Any] = attrs.field(factory=dict)
    bind: str = ""
    capture: str = "DEFAULT"  # NONE: a listener of its own, bound to bind:port
    connection_pool: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ServiceInstance:
    """A service port a workload serves: what inbound listeners and clusters are built from."""

    service: Service
    port: ServicePort
    target_port: int


@attrs.frozen
class PushContext:
    """Everything translators need for one push. Treat as read-only once built."""

    version: str
    mesh: MeshSettings
    registry: registry_mod.Registry
    virtual_services: tuple[VirtualService, ...]
    destination_rules: tuple[DestinationRule, ...]
    gateways: tuple[Gateway, ...]
    sidecars: tuple[ConfigObject, ...]
    objects_by_kind: Mapping[str, tuple[ConfigObject, ...]]
    namespaces: Mapping[str, Mapping[str, str]]  # namespace → labels
    security: security_policies.SecurityPolicies
    # Objects that could not be indexed: left out, the rest served (core/guard.py).
    problems: tuple[ConfigError, ...] = ()
    # The Gateway API objects' conversion: its status, and which Secrets it lets read.
    gateway_api: gateway_api.Converted = attrs.field(factory=gateway_api.Converted)
    telemetries: telemetry.Telemetries = attrs.field(
        factory=lambda: telemetry.build((), "istio-system"))

    # -- objects ---------------------------------------------------------------------

    def objects(self, kind: str) -> tuple[ConfigObject, ...]:
        """Every accepted object of a kind (for plugins that read kinds the core does not)."""
        return self.objects_by_kind.get(kind, ())

    # -- services ----------------------------------------------------------------------

    @property
    def services(self) -> Mapping[str, Service]:
        return self.registry.services

    def service(self, hostname: str) -> Service | None:
        return self.registry.services.get(hostname)

    def endpoints(self, hostname: str, port: int) -> tuple[Endpoint, ...]:
        return self.registry.endpoints_of(hostname, port)

    def sidecar_scope(self, proxy: Proxy) -> SidecarScope:
        """The Sidecar resource that applies to a proxy (or the default: see everything)."""
        chosen: ConfigObject | None = None
        candidates = [s for s in self.sidecars if s.namespace == proxy.namespace]
        for sidecar in candidates:
            selector = (sidecar.spec.get("workloadSelector") or {}).get("labels")
            if selector and labels_match(selector, proxy.labels):
                chosen = sidecar
                break
        if chosen is None:
            chosen = next(
                (s for s in candidates if not s.spec.get("workloadSelector")), None
            )
        if chosen is None:
            chosen = next(
                (s for s in self.sidecars
                 if s.namespace == self.mesh.root_namespace and not s.spec.get("workloadSelector")),
                None,
            )
        if chosen is None:
            return SidecarScope(proxy.namespace, (("*", "*"),), self.mesh.outbound_traffic_policy)
        hosts: list[tuple[str, str]] = []
        excluded: list[tuple[str, str]] = []
        for egress in chosen.spec.get("egress") or []:
            for entry in egress.get("hosts") or []:
                ns, _, dns = str(entry).partition("/")
                if ns.startswith("~"):
                    excluded.append((ns[1:] or "*", dns))
                else:
                    hosts.append((ns, dns))
        if not hosts and not excluded:
            hosts = [("*", "*")]
        policy = (chosen.spec.get("outboundTrafficPolicy") or {}).get("mode") or (
            self.mesh.outbound_traffic_policy
        )
        return SidecarScope(proxy.namespace, tuple(hosts), str(policy), chosen,
                            tuple(excluded))

    def visible_services(self, proxy: Proxy, among: Iterable[str] | None = None
                         ) -> list[Service]:
        """Services the proxy may reach: exported to its namespace, imported by its Sidecar;
        sorted by hostname. ``among``: only those of these hostnames."""
        scope = self.sidecar_scope(proxy) if proxy.type is ProxyType.SIDECAR else None
        candidates = self._services_sorted if among is None else [
            service for host in sorted(among) if (service := self.service(host)) is not None]
        out = []
        for service in candidates:
            if not _exported_to(service.export_to, service.namespace, proxy.namespace):
                continue
            if scope is not None and not scope.imports(service.namespace, service.hostname):
                continue
            out.append(service)
        return out

    @cached_property
    def _services_sorted(self) -> list[Service]:
        return sorted(self.registry.services.values(), key=lambda s: s.hostname)

    def outbound_traffic_policy(self, proxy: Proxy) -> str:
        if proxy.type is ProxyType.SIDECAR:
            return self.sidecar_scope(proxy).outbound_traffic_policy
        return self.mesh.outbound_traffic_policy

    def workload_for(self, proxy: Proxy) -> Workload | None:
        for workload in self.registry.workloads:
            if workload.address in proxy.ip_addresses and workload.namespace == proxy.namespace:
                return workload
        return None

    def ingress_listeners(self, proxy: Proxy) -> list[IngressListener]:
        """The proxy's Sidecar ``ingress[]`` listeners (none: its services' ports rule)."""
        if proxy.type is not ProxyType.SIDECAR:
            return []
        chosen = self.sidecar_scope(proxy).obj
        out = []
        for raw in (chosen.spec.get("ingress") or ()) if chosen is not None else ():
            port = raw.get("port") or {}
            endpoint = str(raw.get("defaultEndpoint") or "")
            unix = endpoint[len("unix://"):] if endpoint.startswith("unix://") else ""
            host, _, target = endpoint.rpartition(":")
            number = int(port.get("number") or 0)
            out.append(IngressListener(
                port=number, protocol=str(port.get("protocol") or ""),
                name=str(port.get("name") or ""),
                address="" if unix else ("127.0.0.1" if host in ("", "127.0.0.1") else
                                         "0.0.0.0"),
                target_port=0 if unix else int(target or number) if (
                    target or "").isdigit() else number,
                unix_path=unix, tls=raw.get("tls") or {}, bind=str(raw.get("bind") or ""),
                capture=str(raw.get("captureMode") or "DEFAULT").upper(),
                connection_pool=raw.get("connectionPool") or {},
            ))
        return out

    def service_instances(self, proxy: Proxy) -> list[ServiceInstance]:
        """Service ports served by the proxy's workload (selector ⊆ its labels, same namespace).

        Named target ports resolve through the proxy's POD_PORTS metadata, so the result
        depends only on the proxy scope.
        """
        named = proxy.pod_ports
        out: list[ServiceInstance] = []
        seen: set[int] = set()
        for service in self._services_sorted:
            if service.namespace != proxy.namespace or not service.selector:
                continue
            if not labels_match(service.selector, proxy.labels):
                continue
            for port in service.ports:
                target = port.resolve_target(named)
                if target is None or target in seen:
                    continue
                seen.add(target)
                out.append(ServiceInstance(service, port, target))
        return out

    # -- identities and security policies ----------------------------------------------

    @cached_property
    def _identities(self) -> Mapping[str, tuple[str, ...]]:
        out: dict[str, set[str]] = defaultdict(set)
        for (hostname, _), endpoints in self.registry.endpoints.items():
            for endpoint in endpoints:
                if endpoint.tls_mode == "istio" and endpoint.service_account:
                    out[hostname].add(spiffe_id(self.mesh.trust_domain, endpoint.namespace,
                                                endpoint.service_account))
        return {host: tuple(sorted(ids)) for host, ids in out.items()}

    def service_identities(self, hostname: str) -> tuple[str, ...]:
        """SPIFFE IDs of the sidecar-backed workloads behind a service (any port), sorted:
        what a client's mTLS accepts from that service. Empty: no endpoint has a sidecar."""
        return self._identities.get(hostname, ())

    @cached_property
    def _hbone_addresses(self) -> frozenset[str]:
        """The IPs of pods that take HBONE on 15008: those ambient captures (or the node
        agent marked redirected), and those labelled ``networking.istio.io/tunnel: http``."""
        out: set[str] = set()
        for pod in self.objects("Pod"):
            labels, annotations = dict(pod.labels), dict(pod.annotations)
            if not (enrollment.in_ambient(labels, annotations,
                                          self.namespaces.get(pod.namespace) or {}, pod.spec)
                    or enrollment.redirected(annotations)
                    or enrollment.native_hbone(labels)):
                continue
            status = pod.body.get("status") or {}
            out.update(str(entry["ip"]) for entry in status.get("podIPs") or ()
                       if entry.get("ip"))
            if status.get("podIP"):
                out.add(str(status["podIP"]))
        return frozenset(out)

    @cached_property
    def _hbone_hosts(self) -> frozenset[str]:
        return frozenset(host for (host, _), endpoints in self.registry.endpoints.items()
                         if any(self.hbone_only(e) for e in endpoints))

    def hbone_only(self, endpoint: Endpoint) -> bool:
        """Does the endpoint take HBONE and not Istio's mTLS (an ambient pod)? Sidecars and
        gateways reach such an endpoint over HBONE, one that has a sidecar with mTLS."""
        return endpoint.address in self._hbone_addresses and endpoint.tls_mode != "istio"

    def hbone_backed(self, hostname: str) -> bool:
        """Has the service (any port) an endpoint that takes only HBONE?"""
        return hostname in self._hbone_hosts

    def derived_changes(
        self, previous: PushContext, changed_kinds: frozenset[str]
    ) -> frozenset[str]:
        """Pseudo kinds whose content differs from ``previous`` (only workload events, and
        namespaces' enrollment labels, can change them, so nothing is compared for other
        batches)."""
        out: set[str] = set()
        if changed_kinds & _WORKLOAD_KINDS and self._identities != previous._identities:
            out.add(SERVICE_IDENTITIES)
        if (changed_kinds & (_WORKLOAD_KINDS | {"Namespace"})
                and self._hbone_hosts != previous._hbone_hosts):
            out.add(HBONE_ENDPOINTS)
        if changed_kinds & gateway_api.INPUT_KINDS and not self.gateway_api.same_output(
                previous.gateway_api):
            out |= gateway_api.OUTPUT_KINDS
        return frozenset(out)

    def endpoint_changes(self, previous: PushContext) -> frozenset[str] | None:
        """The hostnames whose endpoints differ from ``previous``'s, when the services are
        the same in both (None when they are not: more than endpoints changed)."""
        if self.registry.services != previous.registry.services:
            return None
        now, before = self.registry.endpoints, previous.registry.endpoints
        # An endpoint that starts or stops taking HBONE (the node agent's annotation) is
        # the same Endpoint, but its assignment changes.
        moved = self._hbone_addresses ^ previous._hbone_addresses
        return frozenset(host for host, port in now.keys() | before.keys()
                         if now.get((host, port)) != before.get((host, port))
                         or any(e.address in moved for e in now.get((host, port), ())))

    def mtls_policy(self, proxy: Proxy) -> security_policies.MtlsPolicy:
        return self.security.mtls(proxy.namespace, proxy.labels)

    def authorization_policies(self, proxy: Proxy) -> list[security_policies.AuthzPolicy]:
        return self.security.authorization(proxy.namespace, proxy.labels)

    def telemetry_of(self, proxy: Proxy) -> telemetry.Settings:
        """The access logging and metric overrides the proxy's Telemetries give it."""
        return self.telemetries.for_workload(proxy.namespace, proxy.labels)

    def request_authentications(self, proxy: Proxy) -> list[ConfigObject]:
        return self.security.request_authentication(proxy.namespace, proxy.labels)

    # -- destination rules -------------------------------------------------------------

    def destination_rule(self, proxy: Proxy | None, hostname: str) -> DestinationRule | None:
        """The DestinationRule for a host as seen from a proxy (Istio's lookup order).

        The proxy's own namespace first (a rule with a matching workloadSelector before a
        catch-all), then the service's namespace, then the root namespace; within a
        namespace the exact host beats the most specific wildcard.
        """
        viewer_ns = proxy.namespace if proxy else self.mesh.root_namespace
        service = self.service(hostname)
        order = [viewer_ns]
        if service is not None and service.namespace not in order:
            order.append(service.namespace)
        if self.mesh.root_namespace not in order:
            order.append(self.mesh.root_namespace)
        for namespace in order:
            best = self._best_rule(self._rules_by_ns.get(namespace, ()), hostname, proxy,
                                   viewer_ns)
            if best is not None:
                return best
        # Rules in other namespaces exported to the viewer.
        others = [r for ns, rules in self._rules_by_ns.items() if ns not in order for r in rules]
        return self._best_rule(others, hostname, proxy, viewer_ns)

    @cached_property
    def _rules_by_ns(self) -> Mapping[str, tuple[DestinationRule, ...]]:
        by_ns: dict[str, list[DestinationRule]] = defaultdict(list)
        for rule in self.destination_rules:
            by_ns[rule.namespace].append(rule)
        return {ns: tuple(rules) for ns, rules in by_ns.items()}

    @staticmethod
    def _best_rule(
        rules: Iterable[DestinationRule], hostname: str, proxy: Proxy | None, viewer_ns: str
    ) -> DestinationRule | None:
        best: DestinationRule | None = None
        best_rank: tuple[int, int, int] | None = None
        for rule in rules:
            if not _exported_to(rule.export_to, rule.namespace, viewer_ns):
                continue
            if not host_matches(rule.host, hostname):
                continue
            if rule.selector is not None and (
                proxy is None or rule.namespace != proxy.namespace
                or not labels_match(rule.selector, proxy.labels)
            ):
                continue
            # exact host first, then longest wildcard; selector-specific rules first.
            rank = (
                0 if rule.host == hostname else 1,
                0 if rule.selector else 1,
                -len(rule.host),
            )
            if best_rank is None or rank < best_rank:
                best, best_rank = rule, rank
        return best

    # -- virtual services and gateways ----------------------------------------------------

    def virtual_services_for(self, proxy: Proxy, gateway: str) -> list[VirtualService]:
        """VirtualServices bound to a gateway (``ns/name`` or ``mesh``) visible to the proxy."""
        return [
            vs for vs in self.virtual_services
            if gateway in vs.gateways
            and _exported_to(vs.export_to, vs.namespace, proxy.namespace)
        ]

    def gateways_for(self, proxy: Proxy) -> list[Gateway]:
        if proxy.type is not ProxyType.ROUTER:
            return []
        return [gw for gw in self.gateways if gw.selector and labels_match(gw.selector,
                                                                           proxy.labels)
                and (not gw.own_namespace or gw.namespace == proxy.namespace)]


def _creation_order(obj: ConfigObject) -> tuple[str, str, str]:
    return (obj.creation, obj.namespace, obj.name)


def build(
    objects: Iterable[ConfigObject], mesh: MeshSettings, version: str
) -> PushContext:
    """Index all accepted objects into a push context."""
    by_kind: dict[str, list[ConfigObject]] = defaultdict(list)
    for obj in objects:
        # The Gateway API's kinds apart from Istio's: both have a Gateway.
        by_kind[gateway_api.index_key(obj.kind) if obj.group == gateway_api.GROUP
                else obj.kind].append(obj)
    for items in by_kind.values():
        items.sort(key=_creation_order)

    domain = mesh.domain
    # The Gateway API, as Istio serves it: converted into Gateways and VirtualServices that
    # are indexed like the user's own (core/gateway_api).
    converted = guard_convert(by_kind, domain)
    for obj in converted.objects:
        by_kind[obj.kind].append(obj)
    reg = registry_mod.build(
        [o for kind in ("Service", "ServiceEntry", "Pod", "WorkloadEntry", "Endpoints",
                        "EndpointSlice", "Node") for o in by_kind.get(kind, ())],
        domain,
    )
    guard = Guard()

    def virtual_service(obj: ConfigObject) -> VirtualService:
        spec = obj.spec
        gateways = spec.get("gateways") or [MESH_GATEWAY]
        return VirtualService(
            name=obj.name,
            namespace=obj.namespace,
            hosts=tuple(
                resolve_host(str(h), obj.namespace, domain) for h in spec.get("hosts") or ()
            ),
            gateways=frozenset(gateway_ref(str(g), obj.namespace) for g in gateways),
            spec=spec,
            export_to=_export_set(spec),
            obj=obj,
        )

    def destination_rule(obj: ConfigObject) -> DestinationRule:
        return DestinationRule(
            name=obj.name,
            namespace=obj.namespace,
            host=resolve_host(str(obj.spec.get("host") or ""), obj.namespace, domain),
            spec=obj.spec,
            export_to=_export_set(obj.spec),
            selector=((obj.spec.get("workloadSelector") or {}).get("matchLabels") or None),
            obj=obj,
        )

    def gateway(obj: ConfigObject) -> Gateway:
        return Gateway(name=obj.name, namespace=obj.namespace,
                       selector=dict(obj.spec.get("selector") or {}), spec=obj.spec, obj=obj,
                       own_namespace=gateway_api.ORIGIN_ANNOTATION in obj.annotations)

    def each(kind: str, build: Callable[[ConfigObject], T]) -> list[T]:
        built = (guard.run(obj, build, obj) for obj in by_kind.get(kind, ()))
        return [item for item in built if item is not None]

    virtual_services = each("VirtualService", virtual_service)
    rules = _merge_rules(each("DestinationRule", destination_rule))
    gateways = tuple(each("Gateway", gateway))
    namespaces = dict(each("Namespace", lambda obj: (obj.name, dict(obj.labels))))

    return PushContext(
        version=version,
        mesh=mesh,
        registry=reg,
        virtual_services=tuple(virtual_services),
        destination_rules=tuple(rules),
        gateways=gateways,
        sidecars=tuple(by_kind.get("Sidecar", ())),
        objects_by_kind={kind: tuple(items) for kind, items in by_kind.items()},
        namespaces=namespaces,
        security=security_policies.build(by_kind, mesh.root_namespace),
        problems=(*reg.problems, *guard.errors),
        gateway_api=converted,
        telemetries=telemetry.build(by_kind.get("Telemetry", ()), mesh.root_namespace),
    )


def guard_convert(by_kind: Mapping[str, Sequence[ConfigObject]], domain: str
                  ) -> gateway_api.Converted:
    """The Gateway API's conversion; a failure in it (a bug) costs the Gateway API objects,
    not the push, and is logged with what was being converted."""
    try:
        return gateway_api.convert(by_kind, domain)
    except Exception:
        log.exception("converting the Gateway API objects failed; they are left out")
        return gateway_api.Converted()


def _merge_rules(rules: list[DestinationRule]) -> list[DestinationRule]:
    """Istio merges rules for the same host in one namespace: the oldest's traffic policy
    wins, subsets are unioned (first definition of a subset name wins)."""
    merged: dict[tuple[str, str, frozenset[tuple[str, str]] | None, frozenset[str]],
                 DestinationRule] = {}
    for rule in rules:
        key = (rule.namespace, rule.host,
               frozenset(rule.selector.items()) if rule.selector else None, rule.export_to)
        first = merged.get(key)
        if first is None:
            merged[key] = rule
            continue
        names = {s.get("name") for s in first.subsets}
        extra = [s for s in rule.subsets if s.get("name") not in names]
        if extra:
            spec = dict(first.spec)
            spec["subsets"] = [*first.subsets, *extra]
            if "trafficPolicy" not in spec and "trafficPolicy" in rule.spec:
                spec["trafficPolicy"] = rule.spec["trafficPolicy"]
            merged[key] = attrs.evolve(first, spec=spec)
    return list(merged.values())
