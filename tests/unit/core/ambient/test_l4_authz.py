"""ztunnel's L4 authorization over the policies discovery actually generates:
AuthorizationPolicy and PeerAuthentication YAML → push context → Authorization resources →
WorkloadState → ``authorize``."""

from __future__ import annotations

import pytest

from pilotfish.core.ambient.l4_authz import Connection, Verdict, authorize
from pilotfish.core.ambient.model import Match, Policy, Rule, Workload
from pilotfish.core.ambient.state import WorkloadState
from tests.unit.core.ambient.wds_state import FRONTEND, MESH, state_from

EVIL = "spiffe://cluster.local/ns/evil/sa/default"
ADMIN = "spiffe://cluster.local/ns/ops/sa/admin"


def verdict(state: WorkloadState, identity: str | None, *, pod: str = "cart-a",
            source_ip: str = "10.0.1.2", port: int = 8080) -> Verdict:
    destination = state.find_pod("shop", pod)
    assert destination is not None
    connection = Connection(source_ip, identity, destination.addresses[0], port)
    return authorize(state.policies_for(destination), connection, destination)


def with_policies(policies: str) -> WorkloadState:
    return state_from(MESH + "\n---\n" + policies)


def test_no_policy_allows_everything() -> None:
    state = state_from(MESH)
    decided = verdict(state, None)
    assert decided.allowed and decided.policy is None


ALLOW_FRONTEND = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: frontend-only, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/frontend]}}]
    to: [{operation: {ports: ["8080"]}}]
"""


def test_allow_by_principal_and_port() -> None:
    state = with_policies(ALLOW_FRONTEND)
    assert verdict(state, FRONTEND) == Verdict(
        True, "shop/frontend-only",
        f"{FRONTEND} to shop/cart-a:8080: allowed by shop/frontend-only")
    assert not verdict(state, FRONTEND, port=9090).allowed  # the port is not allowed
    other = verdict(state, ADMIN)
    assert not other.allowed and other.policy is None
    assert "no ALLOW policy matches (of shop/frontend-only)" in other.reason
    assert not verdict(state, None).allowed  # no identity: no principal matches
    # The selector picks cart; the client, with no ALLOW policy of its own, takes anything.
    assert verdict(state, ADMIN, pod="client-0").allowed


def test_deny_by_namespace_beats_allow() -> None:
    state = with_policies(ALLOW_FRONTEND + """
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-evil, namespace: istio-system}
spec:
  action: DENY
  rules: [{from: [{source: {namespaces: [evil, "ops*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all-cart, namespace: shop}
spec: {selector: {matchLabels: {app: cart}}, rules: [{}]}
""")
    denied = verdict(state, EVIL)
    assert not denied.allowed and denied.policy == "istio-system/deny-evil"
    assert not verdict(state, ADMIN).allowed  # "ops*": a prefix
    assert verdict(state, FRONTEND).allowed
    # A namespace match needs an identity: a plaintext caller is not "in" evil.
    assert verdict(state, None).policy == "shop/allow-all-cart"


def test_service_accounts_and_not_principals() -> None:
    state = with_policies("""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: accounts, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  rules:
  - from: [{source: {serviceAccounts: [frontend, ops/admin]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: not-admin, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  action: DENY
  rules:
  - from: [{source: {notPrincipals: ["*/sa/frontend"]}}]
    to: [{operation: {ports: ["9090"]}}]
""")
    assert verdict(state, FRONTEND).allowed  # "frontend" is the policy's namespace's
    assert verdict(state, ADMIN).allowed
    assert not verdict(state, "spiffe://cluster.local/ns/shop/sa/other").allowed
    # Only frontend may reach 9090: everyone else is denied there.
    assert verdict(state, FRONTEND, port=9090).allowed
    assert verdict(state, ADMIN, port=9090).policy == "shop/not-admin"


def test_source_ip_blocks_and_destination_conditions() -> None:
    state = with_policies("""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: from-subnet, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  rules:
  - from: [{source: {ipBlocks: [10.0.1.0/24], notIpBlocks: [10.0.1.66]}}]
    when: [{key: destination.ip, values: [10.0.1.5]}]
""")
    assert verdict(state, None, source_ip="10.0.1.9").allowed
    assert not verdict(state, None, source_ip="10.0.1.66").allowed
    assert not verdict(state, None, source_ip="192.168.0.1").allowed
    assert not verdict(state, None, pod="cart-b", source_ip="10.0.1.9").allowed


def test_an_allow_rule_needing_http_allows_nothing_and_a_deny_one_denies_more() -> None:
    state = with_policies("""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  rules: [{to: [{operation: {methods: [GET]}}]}]
""")
    assert not verdict(state, FRONTEND).allowed
    state = with_policies("""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-posts, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  action: DENY
  rules: [{to: [{operation: {methods: [POST], ports: ["8080"]}}]}]
""")
    assert verdict(state, FRONTEND).policy == "shop/no-posts"  # every connection to 8080
    assert verdict(state, FRONTEND, port=9090).allowed


def test_dry_run_policies_decide_nothing_but_are_reported() -> None:
    state = with_policies("""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: would-deny
  namespace: shop
  annotations: {istio.io/dry-run: "true"}
spec:
  action: DENY
  rules: [{from: [{source: {principals: ["*"]}}]}]
""")
    decided = verdict(state, FRONTEND)
    assert decided.allowed and decided.dry_run == ("shop/would-deny",)
    assert verdict(state, None).dry_run == ()


STRICT_SHOP = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
"""


def test_strict_peer_authentication_denies_plaintext_only() -> None:
    state = with_policies(STRICT_SHOP)
    cart = state.find_pod("shop", "cart-a")
    assert cart is not None
    assert "istio-system/istio_converted_static_strict" in cart.authorization_policies
    plain = verdict(state, None)
    assert not plain.allowed
    assert plain.policy == "istio-system/istio_converted_static_strict"
    assert verdict(state, FRONTEND).allowed
    ledger = state.find_pod("bank", "ledger-0")  # bank has no STRICT policy
    assert ledger is not None
    assert authorize(state.policies_for(ledger), Connection("10.0.1.2", None, "10.0.3.5", 8080),
                     ledger).allowed


def test_strict_with_a_permissive_port_lets_plaintext_reach_that_port() -> None:
    state = with_policies(STRICT_SHOP + """
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: metrics-open, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  mtls: {mode: STRICT}
  portLevelMtls: {"15090": {mode: PERMISSIVE}}
""")
    assert verdict(state, None, port=15090).allowed
    denied = verdict(state, None, port=8080)
    assert not denied.allowed
    assert denied.policy == "shop/converted_peer_authentication_metrics-open"
    assert verdict(state, FRONTEND, port=8080).allowed


@pytest.mark.parametrize("identity", [None, FRONTEND])
def test_an_allow_policy_without_rules_allows_nothing(identity: str | None) -> None:
    state = with_policies("""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: shop}
spec: {selector: {matchLabels: {app: cart}}}
""")
    assert not verdict(state, identity).allowed


def test_empty_rules_clauses_and_matches_as_ztunnel_reads_them() -> None:
    def allow(*rules: Rule) -> Policy:
        return Policy("p", "shop", "NAMESPACE", "ALLOW", rules)

    cart = Workload(uid="u", name="cart-a", namespace="shop", addresses=("10.0.1.5",))
    plain = Connection("10.0.1.2", None, "10.0.1.5", 8080)
    assert authorize([allow(((),))], plain, cart).allowed  # a clause without matches: all
    assert authorize([allow(())], plain, cart).allowed  # a rule without clauses: all
    assert not authorize([allow()], plain, cart).allowed  # no rules: nothing
    assert not authorize([allow(((Match(),),))], plain, cart).allowed  # an empty match


def test_an_empty_source_allows_nothing_and_an_http_only_deny_denies_everything() -> None:
    state = with_policies("""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: empty-source, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  rules: [{from: [{source: {}}]}]
""")
    assert not verdict(state, FRONTEND).allowed  # as ztunnel: the empty match is skipped
    state = with_policies("""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-gets, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  action: DENY
  rules: [{to: [{operation: {methods: [GET]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: evil-with-header, namespace: shop}
spec:
  selector: {matchLabels: {app: client}}
  action: DENY
  rules:
  - from: [{source: {namespaces: [evil]}}]
    when: [{key: "request.headers[x-user]", values: [mallory]}]
""")
    # Enforced without its HTTP part: every connection to cart is denied...
    assert verdict(state, FRONTEND).policy == "shop/no-gets"
    # ...and the header condition is dropped, the namespace kept.
    assert verdict(state, EVIL, pod="client-0").policy == "shop/evil-with-header"
    assert verdict(state, FRONTEND, pod="client-0").allowed
