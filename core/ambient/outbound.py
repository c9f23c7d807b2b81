"""Where ztunnel sends a connection a pod opened (caught on 15001): ztunnel's outbound
decision, sans-IO.

1. A destination port of ztunnel's own (15001, 15006, 15008) is refused: a self call.
2. A service VIP (looked up on the source's network) with a waypoint: HBONE to the waypoint,
   ``:authority`` the VIP and port the pod dialled, the waypoint's identities expected —
   unless the source is that waypoint.
3. A service VIP otherwise: an endpoint, healthy ones only unless the service's health
   policy is ALLOW_ALL, the closest ones when its ``load_balancing`` asks (FAILOVER: those
   matching the most of its scopes, in order; STRICT: only those matching them all), at the
   target port the endpoint serves that port on. None: "no healthy upstream", or
   passthrough to the VIP for a PASSTHROUGH service.
4. A workload IP: that workload; through its own waypoint when it has one and the source is
   not a waypoint.
5. Anything else: passthrough, plain TCP to the original destination.

An endpoint is reached as its ``tunnel_protocol`` says: HBONE to ``IP:15008`` with
``:authority IP:TARGET_PORT``; anything else plain TCP to ``IP:TARGET_PORT`` (NONE is a pod
outside the mesh; a LEGACY_ISTIO_MTLS sidecar accepts plaintext in PERMISSIVE).

A waypoint's address is resolved as ztunnel does: a service VIP (the waypoint's Service, as
discovery sends it) or hostname to one of that service's workloads, a workload IP to that
workload; HBONE then goes to the workload's IP on the waypoint's HBONE port.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from pilotfish.core.ambient.model import GatewayAddress, LoadBalancing, Service, Workload
from pilotfish.core.ambient.state import WorkloadState

# Chooses one of equally good candidates (random.choice; tests pass a fixed choice).
Picker = Callable[[Sequence[Any]], Any]
HBONE_PORT = 15008
ILLEGAL_PORTS = frozenset({15001, 15006, 15008})


@attrs.frozen
class Hbone:
    """HTTP/2 CONNECT over mTLS to ``address``."""

    address: tuple[str, int]  # where to open TLS: a pod IP (or waypoint pod IP) and 15008
    authority: str  # the CONNECT ``:authority``
    identities: tuple[str, ...]  # SPIFFE IDs the peer's certificate may carry
    via_waypoint: bool
    service: Service | None
    workload: Workload | None  # the endpoint (None via a waypoint for a service)


@attrs.frozen
class Direct:
    """Plain TCP to an endpoint outside the tunnel."""

    address: tuple[str, int]
    workload: Workload | None
    service: Service | None


@attrs.frozen
class Passthrough:
    """Plain TCP to the original destination, which the mesh does not know."""

    address: tuple[str, int]


@attrs.frozen
class Refused:
    reason: str


Route = Hbone | Direct | Passthrough | Refused


def route(state: WorkloadState, source: Workload, destination: tuple[str, int],
          pick: Picker = random.choice) -> Route:
    """The route for a connection ``source`` opened to ``destination`` (its original
    destination); ``pick`` chooses among equally good endpoints."""
    ip, port = destination
    if port in ILLEGAL_PORTS:
        return Refused(f"self call: {ip}:{port} is one of ztunnel's own ports "
                       f"({', '.join(map(str, sorted(ILLEGAL_PORTS)))})")
    service = state.service_by_vip(ip, source.network)
    if service is not None:
        return _to_service(state, source, service, destination, pick)
    workload = state.workload_by_ip(ip, source.network)
    if workload is None:
        return Passthrough(destination)
    if workload.waypoint is not None and not is_waypoint(state, source, workload.waypoint):
        return _via_waypoint(state, workload.waypoint, f"{_host(ip)}:{port}", source.network,
                             None, workload, pick)
    return _endpoint(workload, port, ip, None)


def _to_service(state: WorkloadState, source: Workload, service: Service,
                destination: tuple[str, int], pick: Picker) -> Route:
    ip, port = destination
    if service.waypoint is not None and not is_waypoint(state, source, service.waypoint):
        return _via_waypoint(state, service.waypoint, f"{_host(ip)}:{port}", source.network,
                             service, None, pick)
    balancing = service.load_balancing or LoadBalancing()
    candidates = [(w, t) for w, t in state.endpoints(service, port)
                  if w.addresses and (w.healthy or balancing.health_policy == "ALLOW_ALL")]
    candidates = closest(candidates, source, balancing)
    if not candidates:
        if balancing.mode == "PASSTHROUGH":
            return Passthrough(destination)
        if port not in service.ports:
            return Refused(f"no healthy upstream: service {service.key} has no port {port}")
        return Refused(f"no healthy upstream for {service.key}:{port}")
    workload, target = pick(candidates)
    return _endpoint(workload, target, ip, service)


def _scope_matches(scope: str, source: Workload, other: Workload) -> bool:
    a, b = source.locality, other.locality
    if scope == "NETWORK":
        return source.network == other.network
    if scope == "REGION":
        return a.region == b.region
    if scope == "ZONE":
        return (a.region, a.zone) == (b.region, b.zone)
    if scope == "SUBZONE":
        return (a.region, a.zone, a.subzone) == (b.region, b.zone, b.subzone)
    if scope == "NODE":
        return source.node == other.node
    if scope == "CLUSTER":
        return source.cluster_id == other.cluster_id
    return True


def closest(candidates: list[tuple[Workload, int]], source: Workload,
            balancing: LoadBalancing) -> list[tuple[Workload, int]]:
    """The endpoints ``balancing`` lets ``source`` use: all of them without scopes; with
    FAILOVER those matching the longest run of its scopes; with STRICT those matching all."""
    scopes = balancing.routing_preference
    if not scopes or not candidates:
        return candidates

    def rank(workload: Workload) -> int:
        matched = 0
        for scope in scopes:
            if not _scope_matches(scope, source, workload):
                break
            matched += 1
        return matched

    ranked = [(rank(w), w, t) for w, t in candidates]
    if balancing.mode == "STRICT":
        return [(w, t) for r, w, t in ranked if r == len(scopes)]
    best = max(r for r, _, _ in ranked)
    return [(w, t) for r, w, t in ranked if r == best]


def _address_for(workload: Workload, like: str) -> str:
    """The workload's address of the same family as ``like`` (the address dialled)."""
    try:
        version = ipaddress.ip_address(like).version
    except ValueError:
        return workload.addresses[0]
    return next((a for a in workload.addresses if ipaddress.ip_address(a).version == version),
                workload.addresses[0])


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _endpoint(workload: Workload, port: int, dialled: str, service: Service | None) -> Route:
    if not workload.addresses:
        return Refused(f"no healthy upstream: workload {workload.uid} has no IP address")
    ip = _address_for(workload, dialled)
    if workload.tunnel == "HBONE":
        sans = service.subject_alt_names if service is not None else ()
        identities = (workload.identity, *(s for s in sans if s != workload.identity))
        return Hbone((ip, HBONE_PORT), f"{_host(ip)}:{port}", identities, False, service,
                     workload)
    return Direct((ip, port), workload, service)


def waypoint_workloads(state: WorkloadState, gateway: GatewayAddress) -> list[Workload]:
    """The workloads a waypoint address stands for: its Service's (by VIP or hostname), or
    the one workload with that IP."""
    if gateway.address:
        service = state.service_by_vip(gateway.address, gateway.network)
        if service is None:
            found = state.workload_by_ip(gateway.address, gateway.network)
            return [found] if found is not None else []
    else:
        service = state.service_by_host(gateway.hostname)
        if service is None:
            return []
    seen: dict[str, Workload] = {}
    for workload, _ in state.endpoints(service):
        seen.setdefault(workload.uid, workload)
    return list(seen.values())


def is_waypoint(state: WorkloadState, source: Workload, gateway: GatewayAddress) -> bool:
    """Is ``source`` one of the workloads behind ``gateway`` (so its traffic is the
    waypoint's, already past it)?"""
    return any(w.uid == source.uid for w in waypoint_workloads(state, gateway))


def _via_waypoint(state: WorkloadState, gateway: GatewayAddress, authority: str,
                  network: str, service: Service | None, workload: Workload | None,
                  pick: Picker) -> Route:
    target = gateway.address or f"{gateway.namespace}/{gateway.hostname}"
    candidates = [w for w in waypoint_workloads(state, gateway) if w.addresses]
    healthy = [w for w in candidates if w.healthy]
    if not healthy:
        return Refused(f"no healthy upstream: waypoint {target} has no healthy workload")
    same_network = [w for w in healthy if w.network == network] or healthy
    chosen: Workload = pick(same_network)
    ip = chosen.addresses[0] if not gateway.address else _address_for(chosen, gateway.address)
    return Hbone((ip, gateway.port), authority, (chosen.identity,), True, service, workload)
