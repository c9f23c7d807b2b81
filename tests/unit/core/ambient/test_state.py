"""ztunnel's WorkloadState, filled from what discovery's WDS generators send."""

from __future__ import annotations

import json

import pytest

from pilotfish.core.ambient import authorization_pb2 as apb
from pilotfish.core.ambient import workload_pb2 as wpb
from pilotfish.core.ambient.state import ADDRESS, AUTHORIZATION, StateError, WorkloadState
from tests.unit.core.ambient.wds_state import CART, MESH, state_from

CART_HOST = "cart.shop.svc.cluster.local"


@pytest.fixture(scope="module")
def state() -> WorkloadState:
    return state_from(MESH)


def test_workloads_are_found_by_ip_uid_and_pod(state: WorkloadState) -> None:
    cart = state.workload_by_ip("10.0.1.5")
    assert cart is not None and cart.name == "cart-a" and cart.namespace == "shop"
    assert cart.identity == CART and cart.tunnel == "HBONE" and cart.node == "node-a"
    assert cart.services == {"shop/cart-local.shop.svc.cluster.local": {81: 8080},
                             f"shop/{CART_HOST}": {80: 8080}}
    assert state.workload_by_uid("Kubernetes//Pod/shop/cart-a") == cart
    assert state.find_pod("shop", "cart-a") == cart
    assert state.workload_by_ip("10.0.1.5", network="other") is None
    assert state.find_pod("shop", "nope") is None
    db = state.workload_by_ip("10.0.2.9")
    assert db is not None and db.tunnel == "NONE"


def test_services_are_found_by_vip_and_host_with_their_endpoints(state: WorkloadState) -> None:
    cart = state.service_by_vip("10.96.0.10")
    assert cart is not None and cart.key == f"shop/{CART_HOST}"
    assert cart.ports == {80: 0}  # a named targetPort: each workload resolves it
    assert state.service_by_host(CART_HOST) == cart
    endpoints = state.endpoints(cart, 80)
    assert [(w.name, port) for w, port in endpoints] == [
        ("cart-a", 8080), ("cart-b", 8080), ("cart-c", 8080)]
    assert [w.healthy for w, _ in endpoints] == [True, True, False]
    assert state.endpoints(cart, 81) == []  # not one of cart's ports
    assert [(w.name, p) for w, p in state.endpoints(cart)] == [(w.name, p) for w, p in endpoints]
    ledger = state.service_by_vip("10.96.0.40")
    assert ledger is not None and ledger.waypoint is not None
    assert (ledger.waypoint.address, ledger.waypoint.port) == ("10.96.0.30", 15008)


def test_removal_clears_every_index(state: WorkloadState) -> None:
    mine = state_from(MESH)
    mine.apply(ADDRESS, "Kubernetes//Pod/shop/cart-b", None)
    assert mine.workload_by_ip("10.0.1.6") is None and mine.find_pod("shop", "cart-b") is None
    cart = mine.service_by_host(CART_HOST)
    assert cart is not None
    assert [w.name for w, _ in mine.endpoints(cart, 80)] == ["cart-a", "cart-c"]
    mine.apply(ADDRESS, f"shop/{CART_HOST}", None)
    assert mine.service_by_vip("10.96.0.10") is None and mine.service_by_host(CART_HOST) is None
    revision = mine.revision
    mine.apply(ADDRESS, "never-sent", None)  # removing what is not there is no error...
    assert mine.revision == revision  # ...and no change
    mine.apply(AUTHORIZATION, "shop/never-sent", None)
    assert mine.revision == revision


def test_an_updated_workload_replaces_its_old_addresses() -> None:
    state = WorkloadState()
    first = wpb.Address(workload=wpb.Workload(uid="u", name="p", namespace="ns",
                                              addresses=[bytes([10, 0, 0, 1])]))
    state.apply(ADDRESS, "u", first.SerializeToString())
    second = wpb.Address(workload=wpb.Workload(uid="u", name="p", namespace="ns",
                                               addresses=[bytes([10, 0, 0, 2])]))
    state.apply(ADDRESS, "u", second.SerializeToString())
    assert state.revision == 2
    assert state.workload_by_ip("10.0.0.1") is None
    found = state.workload_by_ip("10.0.0.2")
    assert found is not None and found.identity == "spiffe://cluster.local/ns/ns/sa/default"


@pytest.mark.parametrize(("type_url", "resource", "expected"), [
    (ADDRESS, b"\xff\xff", "does not decode"),
    (ADDRESS, wpb.Address(workload=wpb.Workload(uid="u", addresses=[b"\x01\x02\x03"])
                          ).SerializeToString(),
     "workload: addresses[0]: 3 bytes (010203) is not an IPv4"),
    (ADDRESS, wpb.Address(service=wpb.Service(name="s", hostname="s.ns", ports=[
        wpb.Port(service_port=70000)])).SerializeToString(),
     "service: ports[0].service_port: 70000 is not a port"),
    (ADDRESS, wpb.Address().SerializeToString(), "neither a workload nor a service"),
    (AUTHORIZATION, apb.Authorization(name="p", namespace="ns", rules=[apb.Rule(clauses=[
        apb.Clause(matches=[apb.Match(principals=[apb.StringMatch()])])])]
                                      ).SerializeToString(),
     "rules[0].clauses[0].matches[0].principals[0]: a StringMatch with no exact"),
    ("type.googleapis.com/istio.workload.Workload", b"", "not a type ztunnel knows"),
])
def test_a_malformed_resource_names_itself_and_changes_nothing(
        state: WorkloadState, type_url: str, resource: bytes, expected: str) -> None:
    before = state.dump()
    with pytest.raises(StateError) as info:
        state.apply(type_url, "Kubernetes//Pod/shop/cart-a", resource)
    assert f"{type_url} 'Kubernetes//Pod/shop/cart-a'" in str(info.value)
    assert expected in str(info.value)
    assert state.dump() == before


def test_policies_for_a_workload_are_global_namespace_and_listed_ones() -> None:
    state = state_from(MESH + """
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [evil]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: shop-wide, namespace: shop}
spec: {rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: cart-only, namespace: shop}
spec: {selector: {matchLabels: {app: cart}}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bank-wide, namespace: bank}
spec: {rules: [{}]}
""")
    cart, client = state.find_pod("shop", "cart-a"), state.find_pod("shop", "client-0")
    assert cart is not None and client is not None
    assert [p.key for p in state.policies_for(cart)] == [
        "istio-system/mesh-wide", "shop/cart-only", "shop/shop-wide"]
    assert [p.key for p in state.policies_for(client)] == [
        "istio-system/mesh-wide", "shop/shop-wide"]
    state.apply(AUTHORIZATION, "shop/cart-only", None)
    assert [p.key for p in state.policies_for(cart)] == [
        "istio-system/mesh-wide", "shop/shop-wide"]
    # shop-wide given a selector: no longer the namespace's, and cart does not list it.
    narrowed = apb.Authorization(name="shop-wide", namespace="shop",
                                 scope=apb.WORKLOAD_SELECTOR, rules=[apb.Rule()])
    state.apply(AUTHORIZATION, "shop/shop-wide", narrowed.SerializeToString())
    assert [p.key for p in state.policies_for(cart)] == ["istio-system/mesh-wide"]


def test_dump_is_json_shaped_like_ztunnels_config_dump(state: WorkloadState) -> None:
    dump = json.loads(json.dumps(state.dump()))
    assert set(dump) == {"workloads", "services", "policies"}
    cart = next(w for w in dump["workloads"] if w["name"] == "cart-a")
    assert cart["workloadIps"] == ["10.0.1.5"] and cart["protocol"] == "HBONE"
    assert cart["serviceAccount"] == "cart" and cart["status"] == "Healthy"
    ledger = next(w for w in dump["workloads"] if w["name"] == "ledger-0")
    assert ledger["waypoint"] == {"destination": "/10.96.0.30", "hboneMtlsPort": 15008}
    service = next(s for s in dump["services"] if s["name"] == "cart")
    assert service["vips"] == ["/10.96.0.10"] and service["ports"] == {"80": 0}
    assert service["endpoints"]["Kubernetes//Pod/shop/cart-a"]["port"] == {"80": 8080}
    assert state.statistics()["services"] == len(dump["services"])
