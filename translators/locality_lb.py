"""Locality-aware load balancing: a cluster's endpoints ordered or weighted from where the
proxy runs, as Istio applies ``localityLbSetting``.

The setting in force is the DestinationRule's (``trafficPolicy.loadBalancer``, port-level
and subset policies merged as for the rest of the cluster), else the mesh config's
``localityLbSetting`` (on by default); ``enabled: false`` turns it off. Then:

- ``distribute``: the first entry whose ``from`` matches the proxy's locality sets each
  locality's weight: every ``to`` entry's share is split among the localities it matches, in
  proportion to their endpoint weights; localities no entry matches get no traffic. The
  cluster weighs localities (`cluster_config`).
- otherwise, failover, which Istio applies only with outlier detection (nothing would move
  traffic away from failing local endpoints without it): each locality gets an Envoy
  priority, 0 for the proxy's own sub-zone, then its zone, its region, a region ``failover``
  names for the proxy's region, and the rest; Envoy spills to the next priority as
  endpoints in one become unhealthy or are ejected. With ``failoverPriority`` (label names)
  the priority is instead how many of the labels, in order, an endpoint shares with the
  proxy: all of them 0, all but the last 1, and so on; topology labels compare localities.
  Priorities are numbered without gaps, as Envoy requires.

Patterns in ``from``/``to`` are ``region/zone/subzone`` with ``*`` for any part, or a
prefix (``us-east/*``, ``us-east``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from pilotfish.core.model import REGION_LABEL, SUBZONE_LABEL, ZONE_LABEL, Endpoint
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext

Setting = Mapping[str, Any]
_TOPOLOGY = {REGION_LABEL: 1, ZONE_LABEL: 2, SUBZONE_LABEL: 3}  # locality parts they hold


def setting(push: PushContext, policy: Mapping[str, Any]) -> Setting | None:
    """The localityLbSetting in force for a cluster whose effective traffic policy is
    ``policy``; None when locality load balancing does not apply."""
    found = (policy.get("loadBalancer") or {}).get("localityLbSetting")
    chosen = found if found is not None else push.mesh.locality_lb_setting
    if chosen.get("enabled") is False:
        return None
    if chosen.get("distribute") or policy.get("outlierDetection"):
        return chosen
    return None


def cluster_config(cluster: cluster_pb2.Cluster, chosen: Setting | None) -> None:
    """Weighted localities for ``distribute`` (Envoy ignores locality weights otherwise)."""
    if chosen is not None and chosen.get("distribute"):
        cluster.common_lb_config.locality_weighted_lb_config.SetInParent()


def matches(locality: str, pattern: str) -> bool:
    """Does ``region/zone/subzone`` fall under a pattern (``*`` any part; a prefix)?"""
    parts = locality.split("/")
    for index, want in enumerate(pattern.split("/")):
        if want == "*":
            continue
        if index >= len(parts) or parts[index] != want:
            return False
    return True


def priority(chosen: Setting, proxy: Proxy) -> Callable[[Endpoint], int] | None:
    """How to rank an endpoint for ``proxy`` (lower first; `endpoints.load_assignment`
    numbers the ranks without gaps), or None when the setting ranks nothing: it
    distributes, or the proxy's locality is unknown (Istio then leaves the order alone)."""
    if not proxy.locality or chosen.get("distribute"):
        return None
    keys = [str(k) for k in chosen.get("failoverPriority") or ()]
    if keys:
        mine = [_value(k, proxy.labels, proxy.locality) for k in keys]

        def by_labels(endpoint: Endpoint) -> int:
            shared = 0
            while shared < len(keys) and _value(
                    keys[shared], endpoint.labels, endpoint.locality) == mine[shared]:
                shared += 1
            return len(keys) - shared

        return by_labels
    region, zone, _ = ([*proxy.locality.split("/"), "", ""])[:3]
    targets = [str(r.get("to") or "") for r in chosen.get("failover") or ()
               if r.get("from") == region]

    def by_locality(endpoint: Endpoint) -> int:
        theirs = endpoint.locality.split("/")
        if endpoint.locality == proxy.locality:
            return 0
        if theirs[:2] == [region, zone]:
            return 1
        if theirs[0] == region:
            return 2
        if theirs[0] in targets:
            return 3 + targets.index(theirs[0])
        return 3 + len(targets)

    return by_locality


def distribute(cla: endpoint_pb2.ClusterLoadAssignment, chosen: Setting, proxy: Proxy
               ) -> endpoint_pb2.ClusterLoadAssignment:
    """``cla`` (shared: a copy is changed) weighted by the first ``distribute`` entry whose
    ``from`` holds the proxy's locality; unchanged when none does."""
    rule = next((r for r in chosen.get("distribute") or ()
                 if proxy.locality and matches(proxy.locality, str(r.get("from") or ""))),
                None)
    if rule is None:
        return cla
    out = endpoint_pb2.ClusterLoadAssignment()
    out.CopyFrom(cla)
    groups = list(out.endpoints)
    unmatched = set(range(len(groups)))
    for pattern, share in (rule.get("to") or {}).items():
        taken = {i: _group_weight(groups[i]) for i in sorted(unmatched)
                 if matches(_text(groups[i].locality), str(pattern))}
        unmatched -= taken.keys()
        total = sum(taken.values())
        for index, weight in taken.items():
            value = math.ceil(weight * int(share) / total) if total else 0
            if value > 0:
                groups[index].load_balancing_weight.value = value
    for index in unmatched:
        del groups[index].lb_endpoints[:]
    return out


def cache_key(chosen: Setting, proxy: Proxy) -> tuple[Any, ...]:
    """What a ranked or weighted assignment depends on besides its endpoints."""
    labels = tuple(proxy.labels.get(str(k), "") for k in chosen.get("failoverPriority") or ())
    return (proxy.locality, labels, repr(chosen))


def _text(locality: base_pb2.Locality) -> str:
    return "/".join((locality.region, locality.zone, locality.sub_zone)).rstrip("/")


def _group_weight(group: endpoint_components_pb2.LocalityLbEndpoints) -> int:
    if group.HasField("load_balancing_weight"):
        return int(group.load_balancing_weight.value)
    return sum(max(1, e.load_balancing_weight.value) for e in group.lb_endpoints)


def _value(key: str, labels: Mapping[str, str], locality: str) -> str:
    """A label's value, topology labels read from the locality (as far as they reach)."""
    part = _TOPOLOGY.get(key)
    if part is None:
        return labels.get(key, "")
    return "/".join(locality.split("/")[:part])
