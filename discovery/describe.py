"""What applies to one pod, as ``istioctl x describe pod`` tells it. Sans-IO over a push.

``describe_pod(push, namespace, name)`` answers from the config discovery serves now, with
the same lookups the translators make, as seen from the pod's own sidecar:

- the pod: address, service account, labels, and how its traffic is carried (``sidecar``,
  ``ambient`` or ``none``);
- each Service whose selector takes it: its ports and the pod port each targets; the
  DestinationRule for its host (the subsets whose labels the pod has, and the TLS mode its
  traffic policy sets), the mesh VirtualService that routes it (its HTTP, TCP and TLS routes
  in brief), the Gateways whose VirtualServices send to it, and the waypoint it uses;
- the PeerAuthentications that apply (mesh, namespace and workload level) and the mTLS mode
  they compose to, per port where a port differs; the AuthorizationPolicies and
  RequestAuthentications that select the pod; the waypoint the pod itself uses.

Discovery serves it at ``/debug/describe?pod=NAME.NAMESPACE``; ``pilotfish describe pod``
prints it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from pilotfish.core.ambient import waypoints
from pilotfish.core.ambient.enrollment import SIDECAR_STATUS_ANNOTATION, in_ambient
from pilotfish.core.model import Service, Workload, labels_match
from pilotfish.core.proxy import Proxy, ProxyType
from pilotfish.core.push_context import MESH_GATEWAY, PushContext, VirtualService
from pilotfish.translators.ambient.waypoint_scope import owning_virtual_service, waypoint_index


def describe_pod(push: PushContext, namespace: str, name: str) -> dict[str, Any] | None:
    """What applies to pod ``namespace/name`` (None: discovery knows no such pod)."""
    workload = next((w for w in push.registry.workloads if w.kind == "Pod"
                     and w.namespace == namespace and w.name == name), None)
    if workload is None:
        return None
    proxy = as_sidecar(workload, push.mesh.domain)
    namespace_labels = push.namespaces.get(namespace, {})
    index = waypoint_index(push)
    services: dict[str, dict[str, Any]] = {}
    for instance in push.service_instances(proxy):
        service = instance.service
        entry = services.get(service.hostname)
        if entry is None:
            entry = services[service.hostname] = _service(push, proxy, workload, service,
                                                          namespace_labels, index)
        entry["ports"].append({"name": instance.port.name, "port": instance.port.port,
                               "protocol": instance.port.protocol.value,
                               "targetPort": instance.target_port})
    mtls = push.mtls_policy(proxy)
    own_waypoint = waypoints.binding(workload.labels, namespace, namespace_labels, index,
                                     waypoints.WORKLOAD)
    return {
        "pod": {"name": name, "namespace": namespace, "ip": workload.address,
                "serviceAccount": workload.service_account, "labels": dict(workload.labels),
                "dataplane": _dataplane(workload, namespace_labels),
                "waypoint": _waypoint_name(own_waypoint)},
        "services": list(services.values()),
        "peerAuthentication": {
            "mode": mtls.mode.value,
            "ports": {str(port): mode.value for port, mode in sorted(mtls.ports.items())},
            "applied": [f"{o.name}.{o.namespace}" for o in
                        push.security.peer_authentications_for(namespace, workload.labels)]},
        "authorizationPolicies": [{"name": f"{p.name}.{p.namespace}", "action": p.action}
                                  for p in push.authorization_policies(proxy)],
        "requestAuthentications": [f"{o.name}.{o.namespace}"
                                   for o in push.request_authentications(proxy)],
    }


def as_sidecar(workload: Workload, domain: str) -> Proxy:
    """The proxy the pod's sidecar would be, for the lookups translators make with one."""
    ports = [{"name": n, "containerPort": p} for n, p in sorted(workload.ports.items())]
    return Proxy(
        type=ProxyType.SIDECAR, ip_addresses=(workload.address,), name=workload.name,
        namespace=workload.namespace, dns_domain=f"{workload.namespace}.svc.{domain}",
        labels=dict(workload.labels),
        metadata={"SERVICE_ACCOUNT": workload.service_account, "POD_PORTS": json.dumps(ports)},
        node_id=f"sidecar~{workload.address}~{workload.name}.{workload.namespace}~"
                f"{workload.namespace}.svc.{domain}",
        kind="sidecar")


def _dataplane(workload: Workload, namespace_labels: Mapping[str, str]) -> str:
    if workload.tls_mode == "istio" or SIDECAR_STATUS_ANNOTATION in workload.annotations:
        return "sidecar"
    if in_ambient(workload.labels, workload.annotations, namespace_labels):
        return "ambient"
    return "none"


def _waypoint_name(found: waypoints.Waypoint | None) -> str:
    return f"{found.name}.{found.namespace}" if found is not None else ""


def _service(push: PushContext, proxy: Proxy, workload: Workload, service: Service,
             namespace_labels: Mapping[str, str],
             index: Mapping[tuple[str, str], waypoints.Waypoint]) -> dict[str, Any]:
    rule = push.destination_rule(proxy, service.hostname)
    route = owning_virtual_service(push, proxy, service)
    tls = (rule.traffic_policy.get("tls") or {}) if rule is not None else {}
    return {
        "name": service.name, "namespace": service.namespace, "host": service.hostname,
        "ports": [],
        "destinationRule": None if rule is None else {
            "name": f"{rule.name}.{rule.namespace}",
            "matchingSubsets": [str(s.get("name")) for s in rule.subsets
                                if labels_match(s.get("labels") or {}, workload.labels)],
            "otherSubsets": [str(s.get("name")) for s in rule.subsets
                             if not labels_match(s.get("labels") or {}, workload.labels)],
            "tlsMode": str(tls.get("mode") or "")},
        "virtualService": None if route is None else {
            "name": f"{route.name}.{route.namespace}", "routes": routes_in_brief(route)},
        "gateways": sorted({gateway for vs in push.virtual_services
                            if _sends_to(vs, service.hostname)
                            for gateway in vs.gateways if gateway != MESH_GATEWAY}),
        "waypoint": _waypoint_name(waypoints.binding(
            service.labels, service.namespace, namespace_labels, index, waypoints.SERVICE)),
    }


def _destinations(rules: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for rule in rules:
        for destination in rule.get("route") or ():
            yield destination.get("destination") or {}


def _sends_to(vs: VirtualService, hostname: str) -> bool:
    short = hostname.split(".")[0]
    candidates = {hostname, short, ".".join(hostname.split(".")[:2])}
    return any(str(d.get("host") or "") in candidates
               for d in _destinations([*vs.http, *vs.tcp, *vs.tls]))


def routes_in_brief(vs: VirtualService) -> list[str]:
    """One line a route: what it matches and where it sends (weights where split)."""
    out = []
    for protocol, rules in (("HTTP", vs.http), ("TCP", vs.tcp), ("TLS", vs.tls)):
        for rule in rules:
            matches = [_match_text(m) for m in rule.get("match") or ()] or ["everything"]
            targets = []
            for destination in rule.get("route") or ():
                target = destination.get("destination") or {}
                text = str(target.get("host") or "")
                if target.get("subset"):
                    text += f" subset {target['subset']}"
                if (target.get("port") or {}).get("number"):
                    text += f" port {target['port']['number']}"
                if "weight" in destination and len(rule.get("route") or ()) > 1:
                    text += f" {destination['weight']}%"
                targets.append(text)
            if rule.get("redirect"):
                targets.append("a redirect")
            if rule.get("directResponse"):
                targets.append(f"a {rule['directResponse'].get('status')} answer")
            out.append(f"{protocol}: {' or '.join(matches)} -> {', '.join(targets) or '-'}")
    return out


def _match_text(match: Mapping[str, Any]) -> str:
    parts = []
    for key in ("uri", "authority", "method", "scheme"):
        for how, value in (match.get(key) or {}).items():
            parts.append(f"{key} {how} {value}")
    for header, condition in (match.get("headers") or {}).items():
        for how, value in (condition or {}).items():
            parts.append(f"header {header} {how} {value}")
    if match.get("port"):
        parts.append(f"port {match['port']}")
    if match.get("sniHosts"):
        parts.append("SNI " + ",".join(match["sniHosts"]))
    return " and ".join(parts) or "everything"
