"""AuthorizationPolicy → ztunnel's L4 Authorization, as istiod converts it."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from pilotfish.core.ambient import authorization_pb2 as pb
from pilotfish.core.yamlload import load_text
from pilotfish.translators.ambient.authorization import authorizations, policy_key

POLICIES = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-frontend, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/shop/sa/frontend, "*/sa/admin"]
        namespaces: ["shop*"]
        ipBlocks: [10.1.0.0/16, 10.2.3.4]
        serviceAccounts: [shop/checkout, payments]
    - source: {notNamespaces: [legacy]}
    to:
    - operation: {ports: ["8080", "http"], notPorts: ["9090"]}
    when:
    - {key: destination.port, values: ["8080"]}
    - {key: source.principal, notValues: ["*"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-evil, namespace: shop}
spec:
  action: DENY
  rules: [{from: [{source: {namespaces: [evil]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: empty-selector, namespace: shop}
spec: {selector: {}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: custom, namespace: shop}
spec: {action: CUSTOM, provider: {name: ext}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: shop}
spec: {action: AUDIT, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: for-waypoint, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  rules: [{to: [{operation: {methods: [GET]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: http-rules
  namespace: shop
  annotations: {istio.io/dry-run: "true"}
spec:
  action: ALLOW
  rules:
  - to: [{operation: {methods: [GET], ports: ["80"]}}]
  - from: [{source: {requestPrincipals: ["*"]}}]
  - when: [{key: "request.headers[x-user]", values: [a]}]
  - to: [{operation: {ports: ["5432"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-http, namespace: shop}
spec:
  action: DENY
  rules:
  - to: [{operation: {methods: [POST], ports: ["80"]}}]
  - to: [{operation: {paths: [/admin]}}]
    when: [{key: "request.auth.claims[iss]", values: [x]}, {key: source.ip, values: [10.0.0.0/8]}]
"""


def converted() -> dict[str, pb.Authorization]:
    objects, errors = load_text(POLICIES, "policies.yaml")
    assert not errors, errors
    keys = [policy_key(obj) for obj in objects]
    built = authorizations(objects, "istio-system")
    return {f"{p.namespace}/{p.name}": p for p in built if f"{p.namespace}/{p.name}" in keys}


def as_dict(message: Any) -> Any:
    return json_format.MessageToDict(message)


def test_only_allow_and_deny_policies_without_target_refs_are_ztunnels() -> None:
    assert sorted(converted()) == ["istio-system/mesh-wide", "shop/allow-frontend",
                                   "shop/deny-evil", "shop/deny-http", "shop/empty-selector",
                                   "shop/http-rules"]


def test_scope_follows_the_selector_and_the_root_namespace() -> None:
    policies = converted()
    assert policies["shop/allow-frontend"].scope == pb.WORKLOAD_SELECTOR
    assert policies["shop/deny-evil"].scope == pb.NAMESPACE
    assert policies["shop/deny-evil"].action == pb.DENY
    assert policies["istio-system/mesh-wide"].scope == pb.GLOBAL
    # A selector without labels still makes a selector policy, as istiod sees it.
    assert policies["shop/empty-selector"].scope == pb.WORKLOAD_SELECTOR
    # No rules in an ALLOW policy: it matches nothing, so it allows nothing.
    assert list(policies["istio-system/mesh-wide"].rules) == []


def test_a_rule_is_a_clause_of_sources_one_of_operations_and_one_per_condition() -> None:
    (rule,) = converted()["shop/allow-frontend"].rules
    # As istiod orders them: operations, sources, then each condition.
    operations, sources, port, principal = (as_dict(c)["matches"] for c in rule.clauses)
    assert sources == [
        {"namespaces": [{"prefix": "shop"}],
         "principals": [{"exact": "cluster.local/ns/shop/sa/frontend"},
                        {"suffix": "/sa/admin"}],
         "sourceIps": [{"address": "CgEAAA==", "length": 16},  # 10.1.0.0/16
                       {"address": "CgIDBA==", "length": 32}],  # 10.2.3.4
         # A bare service account is one of the policy's namespace.
         "serviceAccounts": [{"namespace": "shop", "serviceAccount": "checkout"},
                             {"namespace": "shop", "serviceAccount": "payments"}]},
        {"notNamespaces": [{"exact": "legacy"}]},
    ]
    # A named port means nothing at L4: skipped, as istiod skips it.
    assert operations == [{"destinationPorts": [8080], "notDestinationPorts": [9090]}]
    assert port == [{"destinationPorts": [8080]}]
    assert principal == [{"notPrincipals": [{"presence": {}}]}]


def test_allow_rules_that_need_http_are_dropped() -> None:
    policy = converted()["shop/http-rules"]
    assert policy.dry_run
    # Only the ports rule is left: methods, requestPrincipals and a header can never match.
    (rule,) = policy.rules
    assert [as_dict(c) for c in rule.clauses] == [{"matches": [{"destinationPorts": [5432]}]}]


def test_deny_rules_lose_their_http_parts_and_so_match_more() -> None:
    first, second = converted()["shop/deny-http"].rules
    # POST on port 80 → every connection to port 80.
    assert [as_dict(c) for c in first.clauses] == [{"matches": [{"destinationPorts": [80]}]}]
    # A path and a JWT claim, left out (empty Matches, which match all): the source IP
    # condition is what remains.
    assert [as_dict(c) for c in second.clauses] == [
        {"matches": [{}]},
        {"matches": [{}]},
        {"matches": [{"sourceIps": [{"address": "CgAAAA==", "length": 8}]}]},
    ]


NODES = """
apiVersion: v1
kind: Pod
metadata: {name: cart-0, namespace: shop, labels: {app: cart}}
spec: {nodeName: node-a, containers: [{name: app}]}
status: {phase: Running, podIP: 10.0.1.5}
---
apiVersion: v1
kind: Pod
metadata: {name: pay-0, namespace: pay, labels: {app: pay}}
spec: {nodeName: node-b, containers: [{name: app}]}
status: {phase: Running, podIP: 10.0.2.5}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: cart-only, namespace: shop}
spec: {selector: {matchLabels: {app: cart}}, action: DENY, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: pay-only, namespace: pay}
spec: {selector: {matchLabels: {app: pay}}, action: DENY, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: shop-wide, namespace: shop}
spec: {rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: pay-wide, namespace: pay}
spec: {rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec: {rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: pay-from-root, namespace: istio-system}
spec: {selector: {matchLabels: {app: pay}}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: pay}
spec: {mtls: {mode: STRICT}}
"""


def node_policies(node: str) -> list[str]:
    from pilotfish.core import push_context
    from pilotfish.core.meshconfig import MeshSettings
    from pilotfish.core.proxy import parse_node
    from pilotfish.translators.ambient.authorization import Authorizations

    objects, errors = load_text(NODES, "nodes.yaml")
    assert not errors, errors
    push = push_context.build(objects, MeshSettings(), "v1")
    proxy = parse_node("ztunnel~10.0.0.2~ztunnel-1.istio-system~istio-system.svc.cluster.local",
                       {"NODE_NAME": node} if node else {})
    return sorted(f"{p.namespace}/{p.name}" for p in Authorizations().generate(push, proxy, {}))


def test_a_ztunnel_gets_only_the_policies_that_can_apply_on_its_node():
    assert node_policies("node-a") == [
        "istio-system/mesh-wide", "shop/cart-only", "shop/shop-wide"]
    assert node_policies("node-b") == [
        "istio-system/istio_converted_static_strict", "istio-system/mesh-wide",
        "istio-system/pay-from-root", "pay/pay-only", "pay/pay-wide"]
    assert node_policies("node-c") == ["istio-system/mesh-wide"]


def test_a_ztunnel_that_does_not_say_its_node_gets_every_policy():
    assert len(node_policies("")) == 7


def test_ztunnels_on_different_nodes_do_not_share_a_scope():
    from pilotfish.core.proxy import parse_node

    node_id = "ztunnel~10.0.0.2~ztunnel-1.istio-system~istio-system.svc.cluster.local"
    a = parse_node(node_id, {"NODE_NAME": "node-a"})
    assert a.scope != parse_node(node_id, {"NODE_NAME": "node-b"}).scope
    sidecar = "sidecar~10.0.0.3~web-1.shop~shop.svc.cluster.local"
    assert parse_node(sidecar, {"NODE_NAME": "node-a"}).scope == \
        parse_node(sidecar, {"NODE_NAME": "node-b"}).scope
