"""VirtualService destinations that point at nothing: unknown hosts, subsets, ports.

Each becomes a route to a cluster that does not exist, so requests get 503 (or the TCP
connection is closed) with nothing in the config to say why. A host must be a Service or
ServiceEntry exported to the VirtualService's namespace; a subset must be defined by a
DestinationRule for the host; a port must be one the host declares.

A subset is checked whether or not its host is known, as Istio does: the subset names a
DestinationRule subset, and a missing one is its own mistake to fix.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pilotfish.analysis.base import Check, Finding, Inputs, IstioMessage, Level, finding
from pilotfish.core.model import Service, host_matches, resolve_host
from pilotfish.core.objects import ConfigKey, ConfigObject, FieldPath
from pilotfish.core.push_context import MESH_GATEWAY

_NOT_FOUND = "IST0101", "ReferencedResourceNotFound"
_HOSTS = "virtualservice.DestinationHostAnalyzer"
HOST_UNKNOWN = Check("PF0104", "DestinationHostUnknown", Level.ERROR,
                     "a route's destination host is no Service or ServiceEntry it can see",
                     IstioMessage(*_NOT_FOUND, _HOSTS))
SUBSET_UNKNOWN = Check("PF0105", "DestinationSubsetUnknown", Level.ERROR,
                       "a route's destination subset is defined by no DestinationRule",
                       IstioMessage(*_NOT_FOUND, "virtualservice.DestinationRuleAnalyzer"))
PORT_UNKNOWN = Check("PF0106", "DestinationPortUnknown", Level.ERROR,
                     "a route's destination port is not a port of its host",
                     IstioMessage(*_NOT_FOUND, _HOSTS))
PORT_AMBIGUOUS = Check("PF0107", "DestinationPortAmbiguous", Level.ERROR,
                       "a route to a host with several ports names no port",
                       IstioMessage("IST0112", "VirtualServiceDestinationPortSelectorRequired",
                                    _HOSTS))


def destinations(spec: Mapping[str, Any]) -> Iterator[tuple[FieldPath, Mapping[str, Any]]]:
    """Every ``Destination`` in a VirtualService spec, with its field path."""
    for kind in ("http", "tcp", "tls"):
        for i, rule in enumerate(spec.get(kind) or ()):
            if not isinstance(rule, Mapping):
                continue
            for j, route in enumerate(rule.get("route") or ()):
                if isinstance(route, Mapping) and isinstance(route.get("destination"), Mapping):
                    yield ("spec", kind, i, "route", j, "destination"), route["destination"]
            if kind != "http":
                continue
            if isinstance(rule.get("mirror"), Mapping):
                yield ("spec", kind, i, "mirror"), rule["mirror"]
            for k, mirror in enumerate(rule.get("mirrors") or ()):
                if isinstance(mirror, Mapping) and isinstance(mirror.get("destination"), Mapping):
                    yield ("spec", kind, i, "mirrors", k, "destination"), mirror["destination"]


def exported(export_to: frozenset[str], owner: str, viewer: str) -> bool:
    """Is something in namespace ``owner`` with this exportTo visible from ``viewer``?"""
    return any(e == "*" or e == viewer or (e == "." and owner == viewer) for e in export_to)


def lookup(inputs: Inputs, host: str, viewer: str) -> tuple[Service | None, Service | None]:
    """(visible service for the host, a service for it that is not exported to viewer).

    ``host`` may be a wildcard (``*.example.com``): any service under it counts."""
    push = inputs.push
    candidates = [push.service(host)] if push.service(host) else [
        s for s in push.services.values() if host_matches(s.hostname, host)
    ]
    visible = [s for s in candidates if s and exported(s.export_to, s.namespace, viewer)]
    hidden = [s for s in candidates if s and s not in visible]
    return (visible[0] if visible else None), (hidden[0] if hidden else None)


def _check_subset(inputs: Inputs, vs: ConfigObject, path: FieldPath, host: str,
                  subset: str) -> Iterator[Finding]:
    rules = [r for r in inputs.push.destination_rules
             if host_matches(r.host, host) and exported(r.export_to, r.namespace, vs.namespace)]
    if any(r.subset(subset) is not None for r in rules):
        return
    if rules:
        names = sorted({str(s.get("name")) for r in rules for s in r.subsets})
        why = (f"DestinationRule {rules[0].namespace}/{rules[0].name} for {host} defines "
               f"{', '.join(names) if names else 'no subsets'}")
    else:
        why = f"no DestinationRule for {host} is visible from namespace {vs.namespace}"
    yield finding(SUBSET_UNKNOWN, vs, (*path, "subset"),
                  f"subset {subset!r} is not defined: {why}")


def _check_port(vs: ConfigObject, path: FieldPath, destination: Mapping[str, Any],
                service: Service) -> Iterator[Finding]:
    number = int((destination.get("port") or {}).get("number") or 0)
    declared = sorted(p.port for p in service.ports)
    if not declared:
        return  # a ServiceEntry without ports: nothing to check against
    if number and service.port(number) is None:
        yield finding(PORT_UNKNOWN, vs, (*path, "port", "number"),
                      f"{service.hostname} has no port {number} "
                      f"(its ports: {', '.join(map(str, declared))})")
    elif not number and len(declared) > 1:
        # An error wherever the route applies, as in Istio: from sidecars the port the
        # client called is used, which works only while clients call the right one.
        gateways = set(vs.spec.get("gateways") or [MESH_GATEWAY])
        effect = ("at a gateway the route goes to the gateway server's port, which this host "
                  "likely does not have" if gateways - {MESH_GATEWAY} else
                  "from sidecars the port the client called is used, and a call on a port this "
                  "host does not have fails")
        yield finding(PORT_AMBIGUOUS, vs, (*path, "host"),
                      f"{service.hostname} has ports {', '.join(map(str, declared))} and "
                      f"the destination names none; {effect}. Set port.number")


def rejected_service(inputs: Inputs, host: str) -> bool:
    """Is ``host`` the name of a Service the store refused as invalid?"""
    name, _, rest = host.partition(".")
    namespace, _, suffix = rest.partition(".")
    return suffix == f"svc.{inputs.domain}" and ConfigKey("Service", namespace, name) in (
        inputs.rejected)


def _viewers(vs: ConfigObject) -> list[str]:
    """Namespaces whose proxies apply the VirtualService and so must see its hosts: its own,
    and those its exportTo names (``*`` cannot be listed and is left out)."""
    named = [str(n) for n in vs.spec.get("exportTo") or () if str(n) not in ("*", ".", "~")]
    return list(dict.fromkeys([vs.namespace, *named]))


def _host_finding(inputs: Inputs, vs: ConfigObject, path: FieldPath, raw: str,
                  host: str) -> Finding | None:
    for viewer in _viewers(vs):
        service, hidden = lookup(inputs, host, viewer)
        if service is not None:
            continue
        if hidden is not None:
            why = f"{hidden.hostname} (namespace {hidden.namespace}) is not exported to " \
                  f"namespace {viewer}"
        elif rejected_service(inputs, host):
            why = "its Service is invalid and was not accepted (see PF0001)"
        else:
            why = "no Service or ServiceEntry defines it"
        where = "" if viewer == vs.namespace else f" in namespace {viewer} (exportTo)"
        named = f"host {raw!r}" if raw == host else f"host {raw!r} ({host})"
        return finding(HOST_UNKNOWN, vs, (*path, "host"), f"{named} is unknown{where}: {why}")
    return None


def analyze(inputs: Inputs) -> Iterator[Finding]:
    for vs in inputs.push.objects("VirtualService"):
        for path, destination in destinations(vs.spec):
            raw = str(destination.get("host") or "")
            if not raw:
                continue
            host = resolve_host(raw, vs.namespace, inputs.domain)
            missing = _host_finding(inputs, vs, path, raw, host)
            if missing is not None:
                yield missing
            else:
                service, _ = lookup(inputs, host, vs.namespace)
                assert service is not None
                yield from _check_port(vs, path, destination, service)
            if destination.get("subset"):
                yield from _check_subset(inputs, vs, path, host, str(destination["subset"]))
