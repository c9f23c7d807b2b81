"""ztunnel's outbound decision (15001) and the targets of inbound HBONE (15008) and
plaintext (15006), over a WorkloadState filled from discovery's WDS generators."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from pilotfish.core.ambient import inbound
from pilotfish.core.ambient.model import LoadBalancing, Locality, Workload
from pilotfish.core.ambient.outbound import (
    Direct,
    Hbone,
    Passthrough,
    Refused,
    closest,
    route,
)
from pilotfish.core.ambient.state import WorkloadState
from tests.unit.core.ambient.wds_state import CART, MESH, WAYPOINT, state_from


@pytest.fixture(scope="module")
def state() -> WorkloadState:
    return state_from(MESH)


def pod(state: WorkloadState, namespace: str, name: str) -> Workload:
    found = state.find_pod(namespace, name)
    assert found is not None
    return found


def first(items: Sequence[Any]) -> Any:
    return items[0]


def test_a_service_vip_goes_to_a_healthy_endpoint_over_hbone(state: WorkloadState) -> None:
    client = pod(state, "shop", "client-0")
    offered: list[Sequence[Any]] = []

    def pick(items: Sequence[Any]) -> Any:
        offered.append(items)
        return items[-1]

    decided = route(state, client, ("10.96.0.10", 80), pick)
    assert [w.name for w, _ in offered[0]] == ["cart-a", "cart-b"]  # cart-c is not ready
    assert isinstance(decided, Hbone)
    assert decided.address == ("10.0.1.6", 15008)
    assert decided.authority == "10.0.1.6:8080"  # the pod's target port, not the VIP's
    assert decided.identities == (CART,)
    assert not decided.via_waypoint
    assert decided.service is not None and decided.service.name == "cart"
    assert decided.workload is not None and decided.workload.name == "cart-b"


def test_a_pod_ip_goes_to_that_pod(state: WorkloadState) -> None:
    decided = route(state, pod(state, "shop", "client-0"), ("10.0.1.5", 8080), first)
    assert isinstance(decided, Hbone)
    assert (decided.address, decided.authority, decided.service) == (
        ("10.0.1.5", 15008), "10.0.1.5:8080", None)


def test_a_destination_outside_the_mesh_is_plain_tcp(state: WorkloadState) -> None:
    client = pod(state, "shop", "client-0")
    decided = route(state, client, ("10.96.0.20", 5432), first)
    assert isinstance(decided, Direct) and decided.address == ("10.0.2.9", 5432)
    assert decided.workload is not None and decided.workload.name == "db-0"
    assert route(state, client, ("93.184.216.34", 443), first) == \
        Passthrough(("93.184.216.34", 443))


def test_a_service_with_a_waypoint_goes_to_the_waypoint_with_the_vip(
        state: WorkloadState) -> None:
    decided = route(state, pod(state, "shop", "client-0"), ("10.96.0.40", 80), first)
    assert isinstance(decided, Hbone)
    assert decided.address == ("10.0.3.30", 15008)  # the waypoint's pod, behind its VIP
    assert decided.authority == "10.96.0.40:80"
    assert decided.identities == (WAYPOINT,)
    assert decided.via_waypoint and decided.workload is None
    assert decided.service is not None and decided.service.name == "ledger"


def test_a_workload_with_a_waypoint_is_reached_through_it(state: WorkloadState) -> None:
    decided = route(state, pod(state, "shop", "client-0"), ("10.0.3.5", 8080), first)
    assert isinstance(decided, Hbone) and decided.via_waypoint
    assert (decided.address, decided.authority) == (("10.0.3.30", 15008), "10.0.3.5:8080")
    assert decided.workload is not None and decided.workload.name == "ledger-0"


def test_traffic_from_the_waypoint_goes_to_the_endpoint(state: WorkloadState) -> None:
    waypoint = pod(state, "bank", "waypoint-0")
    decided = route(state, waypoint, ("10.96.0.40", 80), first)
    assert isinstance(decided, Hbone) and not decided.via_waypoint
    assert (decided.address, decided.authority) == (("10.0.3.5", 15008), "10.0.3.5:8080")
    decided = route(state, waypoint, ("10.0.3.5", 8080), first)
    assert isinstance(decided, Hbone) and not decided.via_waypoint


@pytest.mark.parametrize("port", [15001, 15006, 15008])
def test_ztunnels_own_ports_are_a_self_call(state: WorkloadState, port: int) -> None:
    decided = route(state, pod(state, "shop", "client-0"), ("10.0.1.5", port), first)
    assert isinstance(decided, Refused) and decided.reason.startswith("self call")


def test_no_endpoint_is_no_healthy_upstream(state: WorkloadState) -> None:
    client = pod(state, "shop", "client-0")
    assert route(state, client, ("10.96.0.12", 80), first) == Refused(
        "no healthy upstream for shop/nobody.shop.svc.cluster.local:80")
    decided = route(state, client, ("10.96.0.10", 81), first)
    assert isinstance(decided, Refused) and "has no port 81" in decided.reason


def test_internal_traffic_policy_local_keeps_to_the_node(state: WorkloadState) -> None:
    client = pod(state, "shop", "client-0")  # on node-a, as cart-a
    decided = route(state, client, ("10.96.0.11", 81), lambda items: items[-1])
    assert isinstance(decided, Hbone) and decided.authority == "10.0.1.5:8080"
    db = pod(state, "legacy", "db-0")  # on node-b: cart-b there; cart-c is not ready
    decided = route(state, db, ("10.96.0.11", 81), lambda items: items[-1])
    assert isinstance(decided, Hbone) and decided.authority == "10.0.1.6:8080"
    elsewhere = Workload(uid="x", name="x", namespace="shop", node="node-z")
    assert isinstance(route(state, elsewhere, ("10.96.0.11", 81), first), Refused)


def test_failover_prefers_the_closest_endpoints() -> None:
    def at(name: str, region: str, zone: str) -> Workload:
        return Workload(uid=name, name=name, namespace="ns",
                        locality=Locality(region, zone))

    source = at("me", "eu", "eu-1")
    candidates = [(at("far", "us", "us-1"), 80), (at("region", "eu", "eu-2"), 80),
                  (at("zone", "eu", "eu-1"), 80)]
    failover = LoadBalancing(("NETWORK", "REGION", "ZONE"), "FAILOVER")
    assert [w.name for w, _ in closest(candidates, source, failover)] == ["zone"]
    assert [w.name for w, _ in closest(candidates[:2], source, failover)] == ["region"]
    strict = LoadBalancing(("NETWORK", "REGION", "ZONE"), "STRICT")
    assert closest(candidates[:2], source, strict) == []
    assert closest(candidates, source, LoadBalancing()) == candidates


# -- inbound ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("authority", "local_ip", "expected"), [
    ("10.0.1.5:8080", "10.0.1.5", ("10.0.1.5", 8080)),
    ("cart.shop.svc.cluster.local:80", "10.0.1.5", ("10.0.1.5", 8080)),  # the target port
    ("10.0.1.6:8080", "10.0.1.5", 400),  # not this connection's destination
    ("ledger.bank.svc.cluster.local:80", "10.0.1.5", 400),  # a service cart-a does not back
    ("10.0.1.5:15006", "10.0.1.5", 400),  # ztunnel's own port
    ("10.0.1.5", "10.0.1.5", 400),
    ("[10.0.1.5]:80", "10.0.1.5", 400),
    ("fe80::1:80", "10.0.1.5", 400),  # IPv6 must be bracketed
    ("unknown.example:80", "10.0.1.5", 400),
    ("10.9.9.9:8080", "10.9.9.9", 503),  # no workload here
    # The waypoint takes CONNECTs for the VIPs and pods it serves...
    ("10.96.0.40:80", "10.0.3.30", ("10.0.3.30", 80)),
    ("10.0.3.5:8080", "10.0.3.30", ("10.0.3.30", 8080)),
    # ...and no other pod does.
    ("10.96.0.40:80", "10.0.3.5", 400),
    ("10.0.3.30:8080", "10.0.3.5", 400),
])
def test_hbone_target(state: WorkloadState, authority: str, local_ip: str,
                      expected: tuple[str, int] | int) -> None:
    assert inbound.hbone_target(state, authority, local_ip) == expected


def test_a_refusal_says_why(state: WorkloadState) -> None:
    decided = inbound.check_hbone(state, "10.0.1.6:8080", "10.0.1.5")
    assert decided == inbound.Reject(400, "destination mismatch: :authority '10.0.1.6:8080' "
                                          "is not this connection's destination 10.0.1.5")


def test_ipv6_authorities_parse() -> None:
    assert inbound.parse_authority("[fd00::5]:8080") == ("fd00::5", 8080)
    assert inbound.parse_authority("[fd00::zz]:8080") is None
    assert inbound.parse_authority("host:99999") is None


def test_plaintext_target(state: WorkloadState) -> None:
    found = inbound.check_plaintext(state, ("10.0.1.5", 8080))
    assert isinstance(found, Workload) and found.name == "cart-a"
    assert inbound.check_plaintext(state, ("10.0.1.5", 15008)) == inbound.Reject(
        400, "illegal port 15008: one of ztunnel's own")
    assert isinstance(inbound.check_plaintext(state, ("10.9.9.9", 80)), inbound.Reject)
