"""What ztunnel does with a connection into a pod: the target of an HBONE CONNECT (15008)
and of a plaintext connection caught on 15006, sans-IO. Authorization comes after
(`l4_authz`), on the connection these return.

A CONNECT's ``:authority`` is ``IP:PORT`` (a pod's IP and target port, or the service VIP
and port when the caller went through this pod as a waypoint) or ``HOSTNAME:PORT`` (a
service this pod backs, the port its service port). Its IP must be the connection's real
destination — the pod's own — unless the pod has an application tunnel or is the waypoint
of what the authority names: a CONNECT cannot reach another pod through this one. The
upstream is always this pod: its IP and the port asked for (the service's target port, for a
hostname). Refusals are HTTP statuses, as ztunnel answers them: 400 for a bad authority, a
destination mismatch or one of ztunnel's own ports, 503 when this pod is not a workload
ztunnel knows.
"""

from __future__ import annotations

import ipaddress

import attrs

from pilotfish.core.addresses import is_ip
from pilotfish.core.ambient.model import Workload
from pilotfish.core.ambient.outbound import ILLEGAL_PORTS, is_waypoint
from pilotfish.core.ambient.state import WorkloadState

BAD_REQUEST = 400
UNAVAILABLE = 503


@attrs.frozen
class Reject:
    status: int
    reason: str


def parse_authority(authority: str) -> tuple[str, int] | None:
    """``IP:PORT``, ``[IPv6]:PORT`` or ``HOST:PORT`` → (host, port); None when malformed."""
    host, colon, port = authority.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            return str(ipaddress.IPv6Address(host)), int(port)
        except ValueError:
            return None
    if ":" in host:
        return None  # an IPv6 address must be bracketed
    try:
        return str(ipaddress.ip_address(host)), int(port)
    except ValueError:
        return host, int(port)


def _serves_as_waypoint(state: WorkloadState, local: Workload, host: str, network: str
                        ) -> bool:
    """Is ``local`` the waypoint of the service or workload ``host`` (an IP) names?"""
    service = state.service_by_vip(host, network)
    if service is not None and service.waypoint is not None:
        return is_waypoint(state, local, service.waypoint)
    workload = state.workload_by_ip(host, network)
    return workload is not None and workload.waypoint is not None and \
        is_waypoint(state, local, workload.waypoint)


def check_hbone(state: WorkloadState, authority: str, local_ip: str, network: str = ""
                ) -> tuple[str, int] | Reject:
    """The upstream for a CONNECT to ``authority`` arriving at ``local_ip`` (the
    connection's real destination), or why not."""
    parsed = parse_authority(authority)
    if parsed is None:
        return Reject(BAD_REQUEST, f"bad :authority {authority!r} (expected IP:PORT or "
                      "HOSTNAME:PORT)")
    host, port = parsed
    if port in ILLEGAL_PORTS:
        return Reject(BAD_REQUEST, f"illegal port {port} in :authority {authority!r}: "
                      "one of ztunnel's own")
    local = state.workload_by_ip(local_ip, network)
    if local is None:
        return Reject(UNAVAILABLE, f"no workload for {local_ip} (network {network!r})")
    if is_ip(host):
        if ipaddress.ip_address(host) == ipaddress.ip_address(local_ip) or \
                local.application_tunnel is not None or \
                _serves_as_waypoint(state, local, host, network):
            return local_ip, port
        return Reject(BAD_REQUEST, f"destination mismatch: :authority {authority!r} is not "
                      f"this connection's destination {local_ip}")
    service = state.service_by_host(host)
    if service is None:
        return Reject(BAD_REQUEST, f"bad :authority {authority!r}: no service {host}")
    if service.waypoint is not None and is_waypoint(state, local, service.waypoint):
        return local_ip, port
    if service.key not in local.services:
        return Reject(BAD_REQUEST, f"destination mismatch: {local.namespace}/{local.name} "
                      f"({local_ip}) does not back {service.key}")
    target = state.target_port(service, local, port)
    if target is None:
        return Reject(BAD_REQUEST, f"bad :authority {authority!r}: {service.key} has no "
                      f"port {port} on {local.namespace}/{local.name}")
    if target in ILLEGAL_PORTS:
        return Reject(BAD_REQUEST, f"illegal port {target}: one of ztunnel's own")
    return local_ip, target


def hbone_target(state: WorkloadState, authority: str, local_ip: str, network: str = ""
                 ) -> tuple[str, int] | int:
    """``check_hbone``'s upstream, or just the HTTP status of its refusal."""
    decided = check_hbone(state, authority, local_ip, network)
    return decided.status if isinstance(decided, Reject) else decided


def check_plaintext(state: WorkloadState, destination: tuple[str, int], network: str = ""
                    ) -> Workload | Reject:
    """The workload a plaintext connection caught on 15006 is for (its original
    destination), or why it is refused. It carries no identity: policy decides the rest."""
    ip, port = destination
    if port in ILLEGAL_PORTS:
        return Reject(BAD_REQUEST, f"illegal port {port}: one of ztunnel's own")
    local = state.workload_by_ip(ip, network)
    if local is None:
        return Reject(UNAVAILABLE, f"no workload for {ip} (network {network!r})")
    return local
