"""Istio Gateways that no proxy serves as written: a selector that picks no pod, a server
port the gateway's Service does not expose, two Gateways claiming one host on one port.

A Gateway is served by the gateway proxies its selector picks, in any namespace. With
none, its servers exist nowhere. Clients reach those proxies through a Service, so a
server port that is neither a port nor a target port of any Service selecting them is
reachable only from inside the pod. And when two Gateways select the same proxies and
declare the same port, the proxy may serve only one of them there (as
``translators/gateway_listeners.py`` builds the port): servers of different kinds (plaintext
HTTP, TLS, TCP) cannot share it, a TCP server takes all of it, and a TLS host goes to the
first server that names it; the later one loses, by the order the config was read.
Plaintext HTTP servers share the port's routes host by host, so they do not conflict
(Istio reports them too when their hosts overlap).

Gateways converted from the Gateway API are left out: their proxies and Service are made
from the Gateway API object itself, with its listeners' ports, and its status already says
what could not be served.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence

import attrs

from pilotfish.analysis.base import (
    Check,
    Finding,
    Inputs,
    IstioMessage,
    Level,
    PodTemplate,
    finding,
    hosts_overlap,
    split_server_host,
)
from pilotfish.core import protocol
from pilotfish.core.model import Service
from pilotfish.core.push_context import Gateway, GatewayServer

_PORTS = "gateway.IngressGatewayPortAnalyzer"
SELECTS_NOTHING = Check(
    "PF0110", "GatewaySelectsNoWorkload", Level.WARNING,
    "a Gateway's selector picks no gateway pod",
    # Istio calls it an error (IST0101); the gateway's pods are often not among the files
    # analyzed (and discovery reports every analyzer error as it serves), so pilotfish warns.
    IstioMessage("IST0101", "ReferencedResourceNotFound", _PORTS,
                 also_from=("gateway.SecretAnalyzer",)),
)
PORT_NOT_ON_SERVICE = Check(
    "PF0111", "GatewayPortNotOnService", Level.WARNING,
    "a Gateway server's port is not exposed by the Service of the gateway's pods",
    IstioMessage("IST0162", "GatewayPortNotDefinedOnService", _PORTS),
)
CONFLICTING = Check(
    "PF0112", "ConflictingGateways", Level.ERROR,
    "two Gateways on the same proxies declare one port in ways it cannot serve both",
    IstioMessage("IST0145", "ConflictingGateways", "gateway.ConflictingGatewayAnalyzer"),
)


def user_gateways(inputs: Inputs) -> list[Gateway]:
    """The Istio Gateways written by users (not converted from the Gateway API)."""
    return [gw for gw in inputs.push.gateways if not gw.own_namespace]


def _pairs(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _named_ports(pod: PodTemplate) -> dict[str, int]:
    out: dict[str, int] = {}
    for container in pod.spec.get("containers") or ():
        for port in (container or {}).get("ports") or ():
            if isinstance(port, Mapping) and port.get("name") and port.get("containerPort"):
                out[str(port["name"])] = int(port["containerPort"])
    return out


def _service_ports(service: Service, pods: Sequence[PodTemplate]) -> set[int]:
    """The ports by which clients of a Service reach these pods: the Service ports, and
    the target ports they go to (a gateway listens on either; Istio maps a server port
    that is a Service port to its target port)."""
    out: set[int] = set()
    for port in service.ports:
        out.add(port.port)
        for pod in pods:
            target = port.resolve_target(_named_ports(pod))
            if target is not None:
                out.add(target)
    return out


def _describe(services: Sequence[Service]) -> str:
    def ports(service: Service) -> str:
        return ", ".join(str(p.port) if p.target_port in (None, p.port)
                         else f"{p.port}->{p.target_port}" for p in service.ports)
    return "; ".join(f"Service {s.namespace}/{s.name} (ports {ports(s) or 'none'})"
                     for s in services)


def _check_workloads(inputs: Inputs, gw: Gateway) -> Iterator[Finding]:
    if not gw.selector:
        # pilotfish applies a Gateway only to proxies its selector names.
        yield finding(SELECTS_NOTHING, gw.obj, ("spec", "selector"),
                      "the selector is empty, so no gateway proxy serves this Gateway; "
                      "name the labels of the gateway's pods (istio: ingressgateway)")
        return
    pods = inputs.selected_pods(gw.selector)
    if not pods:
        yield finding(SELECTS_NOTHING, gw.obj, ("spec", "selector"),
                      f"selects {_pairs(gw.selector)}, but no Pod or pod template in the "
                      "config has these labels: no gateway proxy serves this Gateway")
        return
    services = list({(s.namespace, s.name): s for pod in pods
                     for s in inputs.services_of(pod)}.values())
    if not services:
        return  # the gateway's Service is not in the config: nothing to compare with
    offered: set[int] = set()
    for service in services:
        offered |= _service_ports(service, [p for p in pods
                                            if p.namespace == service.namespace])
    for server in gw.servers:
        if server.port and server.port not in offered:
            yield finding(PORT_NOT_ON_SERVICE, gw.obj,
                          ("spec", "servers", server.index, "port", "number"),
                          f"port {server.port} is neither a port nor a target port of "
                          f"{_describe(services)}, which selects this Gateway's pods "
                          f"({_pairs(gw.selector)}): clients of the Service cannot reach it")


def share_workloads(inputs: Inputs, a: Gateway, b: Gateway) -> bool:
    """Do two Gateways apply to one proxy? Yes when a known pod carries both selectors, or
    when one selector's labels include the other's (every pod of the narrower one is a pod
    of the wider one), whether or not the pods are in the config."""
    if not a.selector or not b.selector:
        return False
    if a.selector.items() <= b.selector.items() or b.selector.items() <= a.selector.items():
        return True
    return bool(inputs.selected_pod_ids(a.selector) & inputs.selected_pod_ids(b.selector))


def family(server: GatewayServer) -> str:
    """How a gateway proxy tells connections on a server's port apart: plaintext HTTP
    (by Host header), TLS (by SNI) or TCP (not at all). Servers of different families cannot
    share a port (``translators/gateway_listeners.py``)."""
    proto = protocol.parse(server.protocol)
    if proto.is_http or (proto is protocol.Protocol.HTTPS and server.tls.get("httpsRedirect")
                         and not server.tls.get("mode")):
        return "HTTP"
    if proto in (protocol.Protocol.HTTPS, protocol.Protocol.TLS):
        return "TLS"
    return "TCP"


def _hosts(server: GatewayServer) -> list[str]:
    return [split_server_host(h, server.gateway.namespace)[1] for h in server.hosts]


@attrs.frozen
class _Server:
    """A server with what deciding a clash needs, worked out once."""

    server: GatewayServer
    family: str
    hosts: tuple[str, ...]

    @classmethod
    def of(cls, server: GatewayServer) -> _Server:
        return cls(server, family(server), tuple(_hosts(server)))


def _clash(one: _Server, other: _Server) -> str:
    """Why two servers on one proxy and port cannot both be served ("" if they can)."""
    if one.family != other.family:
        return (f"{one.family} and {other.family} cannot share a port: the server read "
                "later is skipped")
    if one.family == "TCP":
        return "a TCP server takes the whole port: the one read later is skipped"
    if one.family == "TLS":
        shared = sorted({h for h in one.hosts for o in other.hosts if hosts_overlap(h, o)})
        if shared:
            return (f"TLS servers are told apart by SNI, and {', '.join(shared)} goes to the "
                    "one read first")
    return ""  # plaintext HTTP servers share the port's routes, host by host


def _conflicts(inputs: Inputs, gateways: Sequence[Gateway]) -> Iterator[Finding]:
    # Only servers on one (bind, port) can clash: compare within those groups.
    by_port: dict[tuple[str, int], list[_Server]] = defaultdict(list)
    for gw in gateways:
        for server in gw.servers:
            if server.port:
                by_port[(server.bind or "", server.port)].append(_Server.of(server))
    for group in by_port.values():
        if len(group) < 2 or all(s.family == "HTTP" for s in group):
            continue
        for mine in group:
            server, gw = mine.server, mine.server.gateway
            for theirs in group:
                other = theirs.server.gateway
                if other is gw:
                    continue
                why = _clash(mine, theirs)
                if why and share_workloads(inputs, gw, other):
                    yield finding(
                        CONFLICTING, gw.obj,
                        ("spec", "servers", server.index, "port", "number"),
                        f"port {server.port} ({server.protocol}) is also declared by "
                        f"Gateway {other.ref} servers[{theirs.server.index}] "
                        f"({theirs.server.protocol}) on the same gateway proxies "
                        f"({_pairs(gw.selector)}): {why}")


def analyze(inputs: Inputs) -> Iterator[Finding]:
    gateways = user_gateways(inputs)
    for gw in gateways:
        yield from _check_workloads(inputs, gw)
    yield from _conflicts(inputs, gateways)

