"""DestinationRule ``trafficPolicy.tunnel``: TCP carried through an HTTP proxy.

When the one destination of a TCP (or TLS passthrough) route is a host whose traffic policy
sets ``tunnel``, Istio's tcp_proxy opens an HTTP tunnel to that host (a forward proxy) and
sends the bytes through it: ``CONNECT targetHost:targetPort`` (or a ``POST`` with the
bytes as its body for ``protocol: POST``), over the HTTP version of the proxy's service
port. Several weighted destinations are never tunneled, as in Istio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.translators.cluster_policy import effective_policy
from pilotfish.translators.common import parse_cluster_name
from pilotfish.translators.filter_chains import Weighted


def tunnel_for(push: PushContext, proxy: Proxy, destinations: str | Weighted
               ) -> Mapping[str, Any] | None:
    """The ``tunnel`` settings for a tcp_proxy to ``destinations``, if any apply."""
    if isinstance(destinations, str):
        name = destinations
    else:
        kept = [cluster for cluster, weight in destinations if weight > 0]
        if len(kept) != 1:
            return None
        name = kept[0]
    parsed = parse_cluster_name(name)
    if parsed is None:
        return None
    _, port, subset, host = parsed
    rule = push.destination_rule(proxy, host)
    if rule is None:
        return None
    subset_policy = (rule.subset(subset) or {}).get("trafficPolicy") if subset else None
    tunnel = effective_policy(rule.traffic_policy, subset_policy, port).get("tunnel")
    return tunnel if isinstance(tunnel, Mapping) and tunnel.get("targetHost") else None
