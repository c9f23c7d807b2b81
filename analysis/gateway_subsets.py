"""Gateway routes that the mesh's routing rules for their destination do not reach.

A VirtualService bound to ``mesh`` that splits a service's traffic by subset (v1/v2, a
canary) applies in the sidecars only. A gateway forwards straight to the destination its
own VirtualService names: when that destination has no subset, requests entering through
the gateway go to every endpoint of the service, whatever the mesh rule says. Usually the
gateway route was meant to follow the split, and should name the subset itself (or
delegate to the mesh route's rules).
"""

from __future__ import annotations

from collections.abc import Iterator

from pilotfish.analysis.base import Check, Finding, Inputs, IstioMessage, Level, finding
from pilotfish.analysis.destinations import destinations
from pilotfish.core.model import host_matches, resolve_host
from pilotfish.core.push_context import MESH_GATEWAY, VirtualService

INGRESS_IGNORES_SUBSETS = Check(
    "PF0118", "GatewayRouteIgnoresMeshSubsets", Level.WARNING,
    "a gateway route without subset goes to a host whose mesh route splits by subset",
    IstioMessage("IST0140", "IngressRouteRulesNotAffected",
                 "virtualservice.DestinationHostAnalyzer"),
)


def _subsets(vs: VirtualService) -> list[str]:
    names = [str(d.get("subset")) for _, d in destinations(vs.spec) if d.get("subset")]
    return list(dict.fromkeys(names))


def analyze(inputs: Inputs) -> Iterator[Finding]:
    push = inputs.push
    splitting = [(vs, subsets) for vs in push.virtual_services
                 if MESH_GATEWAY in vs.gateways and (subsets := _subsets(vs))]
    if not splitting:
        return
    for vs in push.virtual_services:
        gateways = sorted(vs.gateways - {MESH_GATEWAY})
        if not gateways:
            continue
        for path, destination in destinations(vs.spec):
            raw = str(destination.get("host") or "")
            if not raw or destination.get("subset"):
                continue
            host = resolve_host(raw, vs.namespace, inputs.domain)
            rules = [(rule, subsets) for rule, subsets in splitting if rule is not vs
                     and any(host_matches(h, host) for h in rule.hosts)]
            if not rules:
                continue
            rule, subsets = rules[0]
            yield finding(
                INGRESS_IGNORES_SUBSETS, vs.obj, (*path, "host"),
                f"routes to {host} without a subset, while VirtualService "
                f"{rule.namespace}/{rule.name} splits its traffic by subset "
                f"({', '.join(subsets)}) for the sidecars only: requests through gateway "
                f"{', '.join(gateways)} go to every endpoint of {host}. Name the subset here "
                "if they should follow the split")
