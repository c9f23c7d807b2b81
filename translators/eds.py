"""EDS: a ClusterLoadAssignment for every EDS cluster CDS gives the proxy.

Assignments do not depend on the proxy beyond which clusters it sees, so each is built
once per epoch and shared through the generator memo. When endpoints are all that changed,
a scope's last assignments are kept and only the changed services' are made again
(`update_endpoints`, see core/xds/generator.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any

from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.model import Endpoint, Resolution, Service
from pilotfish.core.protocol import Protocol
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import DestinationRule, PushContext
from pilotfish.core.security_policies import MtlsMode
from pilotfish.core.xds import types
from pilotfish.translators import hbone_outbound, locality_lb
from pilotfish.translators.cluster_policy import effective_policy
from pilotfish.translators.common import OUTBOUND, cluster_name
from pilotfish.translators.endpoints import load_assignment


class Endpoints:
    """Assignments for the proxy's visible services, sidecars and routers alike.

    Passthrough services get one too: routers, which have no original destination, reach
    their endpoints through EDS; a sidecar's clusters for them are ORIGINAL_DST and never
    ask for it (EDS sends only what is subscribed), so one generator serves both kinds and
    its assignments are shared by their scopes.
    """

    type_url = types.ENDPOINT
    proxy_kinds = frozenset({"sidecar", "router"})
    # PeerAuthentication: an endpoint whose workload turns mTLS off loses its tlsMode mark.
    # Namespace: its ambient label decides which pods take HBONE (`hbone_outbound`).
    depends_on = frozenset({
        "Service", "ServiceEntry", "DestinationRule", "Sidecar", "Pod", "WorkloadEntry",
        "Endpoints", "EndpointSlice", "PeerAuthentication", "Node", "Namespace",
    })

    def generate(
        self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]
    ) -> list[endpoint_pb2.ClusterLoadAssignment]:
        return self._assignments(push, push.visible_services(proxy), proxy, memo)

    def update_endpoints(
        self, push: PushContext, proxy: Proxy, memo: dict[Any, Any], hosts: frozenset[str]
    ) -> list[endpoint_pb2.ClusterLoadAssignment]:
        return self._assignments(push, push.visible_services(proxy, among=hosts), proxy, memo)

    @staticmethod
    def _assignments(
        push: PushContext, services: Iterable[Service], proxy: Proxy, memo: dict[Any, Any]
    ) -> list[endpoint_pb2.ClusterLoadAssignment]:
        out = []
        for service in services:
            if service.resolution not in (Resolution.CLIENT_SIDE_LB, Resolution.PASSTHROUGH):
                continue
            rule = push.destination_rule(proxy, service.hostname)
            subsets: list[tuple[str, Any, Any]] = [("", None, None)] + [
                (str(s.get("name")), s.get("labels") or {}, s.get("trafficPolicy"))
                for s in (rule.subsets if rule else ()) if s.get("name")
            ]
            for port in service.ports:
                if port.protocol is Protocol.UDP:
                    continue
                endpoints = push.endpoints(service.hostname, port.port)
                for subset, labels, subset_policy in subsets:
                    name = cluster_name(OUTBOUND, port.port, subset, service.hostname)
                    locality = _locality(push, memo, rule, subset, subset_policy, port.port)
                    hbone = (push.hbone_backed(service.hostname)
                             and hbone_outbound.policy_allows(effective_policy(
                                 rule.traffic_policy if rule else {}, subset_policy,
                                 port.port)))
                    key: tuple[Any, ...] = (
                        name, tuple(sorted(labels.items())) if labels else None, hbone)
                    if locality is not None:
                        key += locality_lb.cache_key(locality, proxy)
                    cla = memo.get(key)
                    if cla is None:
                        cla = load_assignment(
                            name, endpoints, labels, partial(_accepts_mtls, push),
                            locality_lb.priority(locality, proxy) if locality else None,
                            partial(_tunnel, push) if hbone else None)
                        if locality is not None:
                            cla = locality_lb.distribute(cla, locality, proxy)
                        memo[key] = cla
                    out.append(cla)
        return out


def _locality(push: PushContext, memo: dict[Any, Any], rule: DestinationRule | None,
              subset: str, subset_policy: Any, port: int) -> locality_lb.Setting | None:
    """The locality setting of one cluster, worked out once per rule, subset and port."""
    key = ("locality", id(rule.obj) if rule else None, subset, port)
    if key not in memo:
        policy = effective_policy(rule.traffic_policy if rule else {}, subset_policy, port)
        memo[key] = (locality_lb.setting(push, policy), rule)  # the rule keeps the id alive
    found: locality_lb.Setting | None = memo[key][0]
    return found


def _tunnel(push: PushContext, endpoint: Endpoint,
            lb: endpoint_components_pb2.LbEndpoint) -> None:
    """Sidecars and gateways reach an ambient pod through ``connect_originate``
    (`hbone_outbound`)."""
    if hbone_outbound.tunnels(push, endpoint):
        hbone_outbound.tunnel_endpoint(push, endpoint, lb)


def _accepts_mtls(push: PushContext, endpoint: Endpoint) -> bool:
    """Does the endpoint's workload accept mesh mTLS on the endpoint's port?"""
    policy = push.security.mtls(endpoint.namespace, endpoint.labels)
    return policy.for_port(endpoint.port) is not MtlsMode.DISABLE


@hookimpl
def pilotfish_xds_generator() -> Endpoints:
    return Endpoints()
