"""PeerAuthentication → ztunnel's L4 policies, as istiod derives them: the static STRICT policy
and converted workload policies with port-level modes, and which ones a workload lists."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from pilotfish.core import push_context
from pilotfish.core.ambient import authorization_pb2 as pb
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.xds.types import resource_name
from pilotfish.core.yamlload import load_text
from pilotfish.translators.ambient.addresses import addresses
from pilotfish.translators.ambient.peer_authentication import authorizations, workload_keys

STRICT_MESH = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
"""
PERMISSIVE_NAMESPACE = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: legacy}
spec: {mtls: {mode: PERMISSIVE}}
"""
# STRICT with a PERMISSIVE port under a STRICT mesh: the port is let through without identity.
STRICT_WITH_OPEN_PORT = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: metrics-open, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  mtls: {mode: STRICT}
  portLevelMtls: {"15090": {mode: PERMISSIVE}}
"""
# PERMISSIVE with a STRICT port, and no mesh policy: only that port needs an identity.
PERMISSIVE_WITH_STRICT_PORT = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: db-strict, namespace: legacy}
spec:
  selector: {matchLabels: {app: db}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls: {"5432": {mode: STRICT}}
"""
NO_IDENTITY = {"notPrincipals": [{"presence": {}}]}


def policies(*docs: str) -> tuple[Any, ...]:
    objects, errors = load_text("---\n".join(docs), "peer.yaml")
    assert not errors, errors
    return push_context.build(objects, MeshSettings(), "v1").security.peer_authentications


def as_dict(message: Any) -> Any:
    return json_format.MessageToDict(message)


def test_no_peer_authentication_adds_nothing() -> None:
    assert authorizations((), "istio-system") == []
    assert workload_keys((), "istio-system", "shop", {"app": "cart"}) == []


def test_a_strict_mesh_sends_the_static_policy_and_workloads_list_it() -> None:
    found = policies(STRICT_MESH)
    (static,) = authorizations(found, "istio-system")
    assert (static.namespace, static.name, static.action, static.scope) == (
        "istio-system", "istio_converted_static_strict", pb.DENY, pb.WORKLOAD_SELECTOR)
    assert [as_dict(r) for r in static.rules] == [{"clauses": [{"matches": [NO_IDENTITY]}]}]
    assert workload_keys(found, "istio-system", "shop", {"app": "cart"}) == [
        "istio-system/istio_converted_static_strict"]


def test_a_permissive_namespace_overrides_a_strict_mesh() -> None:
    found = policies(STRICT_MESH, PERMISSIVE_NAMESPACE)
    assert workload_keys(found, "istio-system", "legacy", {"app": "db"}) == []
    assert workload_keys(found, "istio-system", "shop", {}) == [
        "istio-system/istio_converted_static_strict"]


def test_a_strict_workload_with_an_open_port_is_converted_and_replaces_the_static_one() -> None:
    found = policies(STRICT_MESH, STRICT_WITH_OPEN_PORT)
    _, converted = authorizations(found, "istio-system")
    assert (converted.namespace, converted.name, converted.action) == (
        "shop", "converted_peer_authentication_metrics-open", pb.DENY)
    # No identity and not port 15090 → denied; the mesh's STRICT is merged in, as istiod does.
    assert [as_dict(r) for r in converted.rules] == [{"clauses": [
        {"matches": [NO_IDENTITY]}, {"matches": [{"notDestinationPorts": [15090]}]},
        {"matches": [NO_IDENTITY]}]}]
    assert workload_keys(found, "istio-system", "shop", {"app": "cart"}) == [
        "shop/converted_peer_authentication_metrics-open"]
    assert workload_keys(found, "istio-system", "shop", {"app": "web"}) == [
        "istio-system/istio_converted_static_strict"]


def test_a_permissive_workload_with_a_strict_port_denies_that_port_without_identity() -> None:
    found = policies(PERMISSIVE_WITH_STRICT_PORT)
    _, converted = authorizations(found, "istio-system")
    assert [as_dict(r) for r in converted.rules] == [{"clauses": [
        {"matches": [{**NO_IDENTITY, "destinationPorts": [5432]}]}]}]
    assert workload_keys(found, "istio-system", "legacy", {"app": "db"}) == [
        "legacy/converted_peer_authentication_db-strict"]


def test_a_workload_lists_selector_policies_then_peer_authentication_ones() -> None:
    objects, errors = load_text(STRICT_MESH + """---
apiVersion: v1
kind: Pod
metadata: {name: cart-0, namespace: shop, labels: {app: cart}}
spec: {containers: [{name: app}]}
status: {phase: Running, podIP: 10.0.1.5}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: cart-only, namespace: shop}
spec: {selector: {matchLabels: {app: cart}}, rules: [{}]}
""", "cart.yaml")
    assert not errors, errors
    push = push_context.build(objects, MeshSettings(), "v1")
    (cart,) = [a.workload for a in addresses(push) if resource_name(a).endswith("/cart-0")]
    assert list(cart.authorization_policies) == [
        "shop/cart-only", "istio-system/istio_converted_static_strict"]
