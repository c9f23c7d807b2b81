"""istiod's implicit allow-from-waypoint policies (``PILOT_AUTO_ALLOW_WAYPOINT_POLICY``;
pilotfish: ``discovery: autoAllowWaypointPolicy: true`` in the mesh config, off by default
as in Istio).

Traffic that crossed a waypoint reaches the destination's ztunnel under the waypoint's own
identity, so an ALLOW policy written for the callers would refuse it. With the setting on,
istiod makes one L4 ``Authorization`` per waypoint, ``WPNS/istio_allow_waypoint_WPNS_WPNAME``
(underscores: no Kubernetes object can have that name), ALLOW, scope WORKLOAD_SELECTOR, whose
one rule admits the principals ``TD/ns/WPNS/sa/SA`` of the service accounts the waypoint's
pods run as (pods labelled ``gateway.networking.k8s.io/gateway-name: WPNAME`` in its
namespace; a waypoint with no pod gets no policy). A workload lists in its
``authorization_policies`` the policy of each waypoint its traffic can come through: those of
the services it backs, then its own. Since any ALLOW policy makes ztunnel refuse what no ALLOW
policy matches, a workload with such a policy and no other ALLOW accepts only its waypoints:
the setting also makes traffic that skips the waypoint fail. Sans-IO.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pilotfish.core.ambient import authorization_pb2 as pb
from pilotfish.core.ambient.waypoints import Waypoint
from pilotfish.core.gateway_api import GATEWAY_NAME_LABEL
from pilotfish.core.objects import ConfigObject

PREFIX = "istio_allow_waypoint_"


def policy_name(waypoint: Waypoint) -> str:
    return f"{PREFIX}{waypoint.namespace}_{waypoint.name}"


def accounts(pods: Iterable[ConfigObject]) -> dict[tuple[str, str], tuple[str, ...]]:
    """The service accounts each waypoint's pods run as, by the waypoint's (namespace, name).
    A pod that names none runs as ``default``, as the API server fills it in."""
    found: dict[tuple[str, str], set[str]] = {}
    for pod in pods:
        name = pod.labels.get(GATEWAY_NAME_LABEL)
        if name:
            found.setdefault((pod.namespace, name), set()).add(
                str(pod.spec.get("serviceAccountName") or "default"))
    return {key: tuple(sorted(names)) for key, names in found.items()}


def authorizations(waypoints: Iterable[Waypoint],
                   service_accounts: Mapping[tuple[str, str], tuple[str, ...]],
                   trust_domain: str) -> list[pb.Authorization]:
    """The implicit policy of every waypoint that has pods."""
    out = []
    for waypoint in waypoints:
        names = service_accounts.get((waypoint.namespace, waypoint.name))
        if not names:
            continue
        principals = [pb.StringMatch(exact=f"{trust_domain}/ns/{waypoint.namespace}/sa/{sa}")
                      for sa in names]
        out.append(pb.Authorization(
            name=policy_name(waypoint), namespace=waypoint.namespace,
            scope=pb.WORKLOAD_SELECTOR, action=pb.ALLOW,
            rules=[pb.Rule(clauses=[pb.Clause(matches=[pb.Match(principals=principals)])])]))
    return out


def workload_keys(own: Waypoint | None, of_services: Iterable[Waypoint | None],
                  service_accounts: Mapping[tuple[str, str], tuple[str, ...]]) -> list[str]:
    """The implicit policies a workload lists: its services' waypoints other than its own
    (in order, once each), then its own; only waypoints that have a policy."""
    chosen: list[Waypoint] = []
    for waypoint in of_services:
        if waypoint is not None and waypoint != own and waypoint not in chosen:
            chosen.append(waypoint)
    if own is not None:
        chosen.append(own)
    return [f"{w.namespace}/{policy_name(w)}" for w in chosen
            if service_accounts.get((w.namespace, w.name))]
