"""istiod's implicit allow-from-waypoint policies (``discovery: autoAllowWaypointPolicy``):
made as istiod makes them, and enforced as ztunnel would, from the served resources."""

from __future__ import annotations

import pytest

from pilotfish.core import push_context
from pilotfish.core.ambient import authorization_pb2 as apb
from pilotfish.core.ambient.l4_authz import Connection, authorize
from pilotfish.core.ambient.state import WorkloadState
from pilotfish.core.meshconfig import MeshConfigError, MeshSettings, from_dict, overlay
from pilotfish.core.proxy import parse_node
from pilotfish.core.xds import types
from pilotfish.core.xds.types import resource_name
from pilotfish.core.yamlload import load_text
from pilotfish.translators.ambient.addresses import addresses
from pilotfish.translators.ambient.authorization import Authorizations

CONFIG = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: infra}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: shop-wp, namespace: shop, labels: {istio.io/waypoint-for: all}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: shared-wp, namespace: infra}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: no-pods, namespace: infra}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Pod
metadata:
  name: shop-wp-1
  namespace: shop
  labels: {gateway.networking.k8s.io/gateway-name: shop-wp,
           gateway.istio.io/managed: istio.io-mesh-controller}
spec: {serviceAccountName: shop-wp, nodeName: node-a, containers: [{name: istio-proxy}]}
status: {phase: Running, podIP: 10.0.1.30}
---
apiVersion: v1
kind: Pod
metadata:
  name: shared-wp-1
  namespace: infra
  labels: {gateway.networking.k8s.io/gateway-name: shared-wp,
           gateway.istio.io/managed: istio.io-mesh-controller}
spec: {nodeName: node-b, containers: [{name: istio-proxy}]}
status: {phase: Running, podIP: 10.0.2.30}
---
apiVersion: v1
kind: Pod
metadata:
  name: cart-1
  namespace: shop
  labels: {app: cart, istio.io/use-waypoint: shop-wp}
spec: {serviceAccountName: cart, nodeName: node-a, containers: [{name: app}]}
status: {phase: Running, podIP: 10.0.1.5}
---
apiVersion: v1
kind: Pod
metadata:
  name: plain-1
  namespace: shop
  labels: {app: plain, istio.io/use-waypoint: none}
spec: {serviceAccountName: plain, nodeName: node-a, containers: [{name: app}]}
status: {phase: Running, podIP: 10.0.1.6}
---
apiVersion: v1
kind: Service
metadata:
  name: cart
  namespace: shop
  labels: {istio.io/use-waypoint: shared-wp, istio.io/use-waypoint-namespace: infra}
spec:
  clusterIP: 10.96.0.10
  selector: {app: cart}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: cart-direct
  namespace: shop
  labels: {istio.io/use-waypoint: shop-wp}
spec:
  clusterIP: 10.96.0.11
  selector: {app: cart}
  ports: [{name: http, port: 81, targetPort: 8080}]
"""


def push(enabled: bool = True) -> push_context.PushContext:
    objects, errors = load_text(CONFIG, "waypoints.yaml")
    assert not errors, errors
    return push_context.build(objects, MeshSettings(auto_allow_waypoint_policy=enabled), "v1")


def workload_policies(built: push_context.PushContext, pod: str) -> list[str]:
    found = {resource_name(a): a for a in addresses(built)}[f"Kubernetes//Pod/shop/{pod}"]
    return list(found.workload.authorization_policies)


def served(built: push_context.PushContext, node: str = "") -> list[apb.Authorization]:
    proxy = parse_node("ztunnel~10.0.0.2~ztunnel-1.istio-system~istio-system.svc.cluster.local",
                       {"NODE_NAME": node} if node else {})
    return Authorizations().generate(built, proxy, {})


def test_one_policy_per_waypoint_with_pods_admits_its_service_accounts() -> None:
    policies = {f"{p.namespace}/{p.name}": p for p in served(push())}
    assert sorted(policies) == ["infra/istio_allow_waypoint_infra_shared-wp",
                                "shop/istio_allow_waypoint_shop_shop-wp"]
    shop = policies["shop/istio_allow_waypoint_shop_shop-wp"]
    assert (shop.scope, shop.action) == (apb.WORKLOAD_SELECTOR, apb.ALLOW)
    [rule] = shop.rules
    [clause] = rule.clauses
    [match] = clause.matches
    assert [m.exact for m in match.principals] == ["cluster.local/ns/shop/sa/shop-wp"]
    # A pod that names no service account runs as "default".
    [shared] = policies["infra/istio_allow_waypoint_infra_shared-wp"].rules[0].clauses[0].matches
    assert [m.exact for m in shared.principals] == ["cluster.local/ns/infra/sa/default"]


def test_a_workload_lists_its_services_waypoints_then_its_own_once_each() -> None:
    # cart's services use shared-wp and shop-wp, its own label shop-wp: shop-wp once, last.
    assert workload_policies(push(), "cart-1") == [
        "infra/istio_allow_waypoint_infra_shared-wp", "shop/istio_allow_waypoint_shop_shop-wp"]
    assert workload_policies(push(), "plain-1") == []


def test_off_by_default_as_in_istio() -> None:
    assert workload_policies(push(enabled=False), "cart-1") == []
    assert [p.name for p in served(push(enabled=False))] == []


def test_every_ztunnel_gets_them_whatever_its_node() -> None:
    assert len(served(push(), "node-c")) == 2


def test_ztunnel_then_admits_the_waypoint_and_only_it() -> None:
    built = push()
    state = WorkloadState()
    for address in addresses(built):
        state.apply(types.ADDRESS, resource_name(address), address.SerializeToString())
    for policy in served(built):
        state.apply(types.AUTHORIZATION, f"{policy.namespace}/{policy.name}",
                    policy.SerializeToString())
    cart = state.workload_by_ip("10.0.1.5")
    assert cart is not None

    def verdict(identity: str) -> bool:
        return authorize(state.policies_for(cart), Connection(
            "10.0.1.30", identity, "10.0.1.5", 8080), cart).allowed

    assert verdict("spiffe://cluster.local/ns/shop/sa/shop-wp")
    assert verdict("spiffe://cluster.local/ns/infra/sa/default")
    assert not verdict("spiffe://cluster.local/ns/shop/sa/someone")  # skipped the waypoint


def test_the_setting_is_read_from_discovery_and_checked() -> None:
    assert from_dict({"discovery": {"autoAllowWaypointPolicy": True}}).mesh \
        .auto_allow_waypoint_policy
    assert not from_dict({}).mesh.auto_allow_waypoint_policy
    # The cluster's mesh ConfigMap replaces MeshConfig fields, not discovery's settings.
    config = from_dict({"discovery": {"autoAllowWaypointPolicy": True}})
    assert overlay(config, "trustDomain: example.org", "istio ConfigMap")[0] \
        .auto_allow_waypoint_policy
    with pytest.raises(MeshConfigError, match=r"discovery\.autoAllowWaypointPolicy.*'yes'"):
        from_dict({"discovery": {"autoAllowWaypointPolicy": "yes"}}, "pilotfish.yaml")
