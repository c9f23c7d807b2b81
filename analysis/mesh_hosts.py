"""VirtualServices for the sidecars (bound to ``mesh``) that claim the same host where both
are visible.

A sidecar builds one virtual host per name: for a service, the VirtualService whose host
names it most precisely (exact before wildcard, longer wildcard before shorter, then the
one read first) supplies all its routes, and another VirtualService's rules for that name
are dropped (``translators/virtual_hosts.py``). Routes split over two objects therefore
lose one half, and which half depends on the order the config was read; merging them into
one VirtualService is the fix. Two VirtualServices conflict only where both are visible:
in a namespace both export to (``exportTo``, everywhere by default).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator

from pilotfish.analysis.base import (
    Check,
    Finding,
    Inputs,
    IstioMessage,
    Level,
    finding,
    hosts_overlap,
)
from pilotfish.core.push_context import MESH_GATEWAY, VirtualService

CONFLICTING_HOSTS = Check(
    "PF0117", "ConflictingMeshHosts", Level.ERROR,
    "two VirtualServices for the sidecars claim one host where both are visible",
    IstioMessage("IST0109", "ConflictingMeshGatewayVirtualServiceHosts",
                 "virtualservice.ConflictingMeshGatewayHostsAnalyzer"),
)


def _visible_in(vs: VirtualService) -> frozenset[str] | None:
    """Namespaces a VirtualService is exported to (None: all of them)."""
    if "*" in vs.export_to:
        return None
    return frozenset(vs.namespace if e == "." else e for e in vs.export_to if e != "~")


def _seen_together(a: VirtualService, b: VirtualService) -> str:
    """A namespace both are visible in ("" if none); ``*`` for every namespace."""
    one, other = _visible_in(a), _visible_in(b)
    if one is None and other is None:
        return "*"
    common = sorted((one if other is None else other if one is None else one & other) or ())
    return common[0] if common else ""


def _claims(mesh: list[VirtualService]) -> Callable[[str], list[VirtualService]]:
    """Which VirtualServices claim names overlapping a host: exact hosts by lookup,
    wildcards by comparison (they are few), so the check stays linear in the hosts."""
    exact: dict[str, list[VirtualService]] = defaultdict(list)
    wild: list[tuple[str, VirtualService]] = []
    for vs in mesh:
        for host in dict.fromkeys(vs.hosts):
            if host.startswith("*"):
                wild.append((host, vs))
            else:
                exact[host].append(vs)

    def claiming(host: str) -> list[VirtualService]:
        found = [vs for pattern, vs in wild if hosts_overlap(pattern, host)]
        if host.startswith("*"):
            found += [vs for name, owners in exact.items() if hosts_overlap(host, name)
                      for vs in owners]
        else:
            found += exact.get(host, [])
        unique: dict[int, VirtualService] = {id(vs): vs for vs in found}
        return list(unique.values())
    return claiming


def analyze(inputs: Inputs) -> Iterator[Finding]:
    mesh = [vs for vs in inputs.push.virtual_services if MESH_GATEWAY in vs.gateways]
    claiming = _claims(mesh)
    for vs in mesh:
        for index, host in enumerate(vs.hosts):
            rivals = []
            where = ""
            for other in claiming(host):
                if other is vs:
                    continue
                seen = _seen_together(vs, other)
                if seen:
                    rivals.append(f"{other.namespace}/{other.name}")
                    where = where or seen
            if rivals:
                scope = "every namespace" if where == "*" else f"namespace {where}"
                yield finding(
                    CONFLICTING_HOSTS, vs.obj, ("spec", "hosts", index),
                    f"host {host} is also claimed for the sidecars by VirtualService "
                    f"{', '.join(rivals)}, and both are visible in {scope}: a sidecar takes "
                    "a name's routes from one of them only (the more precise host, else "
                    "the one read first). Merge them into one VirtualService")
