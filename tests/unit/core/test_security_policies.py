"""Which PeerAuthentication, AuthorizationPolicy and RequestAuthentication apply where."""

from __future__ import annotations

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import parse_node
from pilotfish.core.security_policies import MtlsMode, MtlsPolicy
from pilotfish.core.yamlload import load_text

STRICT, PERMISSIVE, DISABLE = MtlsMode.STRICT, MtlsMode.PERMISSIVE, MtlsMode.DISABLE


def peer(name: str, namespace: str, mode: str | None, selector: str = "",
         ports: str = "", created: str = "") -> str:
    lines = [
        "---", "apiVersion: security.istio.io/v1", "kind: PeerAuthentication",
        f"metadata: {{name: {name}, namespace: {namespace}"
        + (f", creationTimestamp: '{created}'" if created else "") + "}", "spec:",
    ]
    if selector:
        lines.append(f"  selector: {{matchLabels: {{{selector}}}}}")
    if mode:
        lines.append(f"  mtls: {{mode: {mode}}}")
    if ports:
        lines.append(f"  portLevelMtls: {{{ports}}}")
    if not (selector or mode or ports):
        lines.append("  {}")
    return "\n".join(lines) + "\n"


def context(config: str, mesh: MeshSettings | None = None) -> push_context.PushContext:
    objects, errors = load_text(config, "test.yaml")
    assert not errors, errors
    return push_context.build(objects, mesh or MeshSettings(), "v1")


def mtls(config: str, namespace: str = "shop", **labels: str) -> MtlsPolicy:
    return context(config).security.mtls(namespace, labels or {"app": "web"})


# -- PeerAuthentication composition -------------------------------------------------------


def test_without_policies_every_workload_is_permissive() -> None:
    assert mtls("") == MtlsPolicy(PERMISSIVE, {})


def test_mesh_then_namespace_then_workload_each_override_the_level_above() -> None:
    mesh = peer("default", "istio-system", "STRICT")
    namespace = peer("default", "shop", "DISABLE")
    workload = peer("web", "shop", "PERMISSIVE", selector="app: web")
    assert mtls(mesh).mode is STRICT
    assert mtls(mesh + namespace).mode is DISABLE
    assert mtls(mesh + namespace + workload).mode is PERMISSIVE
    assert mtls(mesh + namespace + workload, app="db").mode is DISABLE
    assert mtls(mesh + namespace, namespace="other").mode is STRICT


def test_unset_inherits_from_the_level_above() -> None:
    config = (peer("default", "istio-system", "STRICT") + peer("default", "shop", "UNSET")
              + peer("web", "shop", None, selector="app: web"))
    assert mtls(config).mode is STRICT


def test_port_level_overrides_the_workload_and_unset_ports_inherit() -> None:
    config = peer("default", "shop", "STRICT") + peer(
        "web", "shop", "PERMISSIVE", selector="app: web",
        ports='"8080": {mode: DISABLE}, "9000": {mode: UNSET}, "9090": {mode: STRICT}')
    policy = mtls(config)
    assert policy.ports == {8080: DISABLE, 9000: PERMISSIVE, 9090: STRICT}
    assert [policy.for_port(p) for p in (8080, 9000, 9090, 1)] == [
        DISABLE, PERMISSIVE, STRICT, PERMISSIVE]


def test_port_level_only_counts_on_workload_policies() -> None:
    config = peer("default", "shop", "STRICT", ports='"8080": {mode: DISABLE}')
    assert mtls(config) == MtlsPolicy(STRICT, {})


def test_the_oldest_policy_of_a_level_wins() -> None:
    config = (peer("newer", "shop", "DISABLE", created="2024-02-01T00:00:00Z")
              + peer("older", "shop", "STRICT", created="2024-01-01T00:00:00Z"))
    assert mtls(config).mode is STRICT


def test_root_namespace_selector_policies_select_workloads_of_every_namespace() -> None:
    config = peer("web-everywhere", "istio-system", "DISABLE", selector="app: web")
    assert mtls(config, namespace="shop").mode is DISABLE
    assert mtls(config, namespace="shop", app="db").mode is PERMISSIVE


def test_policies_of_other_namespaces_do_not_apply() -> None:
    config = peer("default", "other", "STRICT") + peer("web", "other", "STRICT",
                                                        selector="app: web")
    assert mtls(config).mode is PERMISSIVE


def test_client_inference_reads_only_the_mesh_and_namespace_levels() -> None:
    security = context(peer("default", "istio-system", "DISABLE")
                       + peer("default", "shop", "STRICT")
                       + peer("web", "other", "STRICT", selector="app: web")).security
    assert security.namespace_mtls("shop") is STRICT
    assert security.namespace_mtls("other") is DISABLE  # its workload policy is not seen


def test_a_proxy_gets_its_own_composition() -> None:
    push = context(peer("default", "shop", "STRICT"))
    proxy = parse_node("sidecar~10.0.0.5~web-1.shop~shop.svc.cluster.local",
                       {"LABELS": {"app": "web"}})
    assert push.mtls_policy(proxy).mode is STRICT


# -- AuthorizationPolicy and RequestAuthentication selection --------------------------------

POLICIES = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-deny, namespace: istio-system}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [evil]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-anywhere, namespace: istio-system}
spec: {selector: {matchLabels: {app: web}}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ns-wide, namespace: shop, annotations: {istio.io/dry-run: "true"}}
spec: {action: AUDIT, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-only, namespace: shop}
spec: {selector: {matchLabels: {app: db}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: elsewhere, namespace: other}
spec: {}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  jwtRules: [{issuer: issuer.example.com, jwks: '{"keys": []}'}]
"""


def test_authorization_policies_by_root_namespace_namespace_and_selector() -> None:
    security = context(POLICIES).security
    web = security.authorization("shop", {"app": "web"})
    assert [(p.name, p.action, p.dry_run) for p in web] == [
        ("mesh-deny", "DENY", False), ("web-anywhere", "ALLOW", False),
        ("ns-wide", "AUDIT", True)]
    # Oldest first; without timestamps, by namespace then name.
    assert [p.name for p in security.authorization("shop", {"app": "db"})] == [
        "mesh-deny", "db-only", "ns-wide"]
    assert [p.name for p in security.authorization("third", {"app": "web"})] == [
        "mesh-deny", "web-anywhere"]
    assert web[0].rule_key(0) == "ns[istio-system]-policy[mesh-deny]-rule[0]"
    assert security.authorization("shop", {"app": "db"})[1].rules == ()


def test_request_authentications_by_selector() -> None:
    security = context(POLICIES).security
    assert [o.name for o in security.request_authentication("shop", {"app": "web"})] == ["jwt"]
    assert security.request_authentication("shop", {"app": "db"}) == []


# -- identities behind services ------------------------------------------------------------

WORKLOADS = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}, {name: tcp, port: 9000}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: web}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web}}
spec: {serviceAccountName: legacy}
status: {podIP: 10.0.0.2}
"""


def test_service_identities_are_the_accounts_of_sidecar_backed_endpoints() -> None:
    push = context(WORKLOADS, MeshSettings(trust_domain="example.org"))
    assert push.service_identities("web.shop.svc.cluster.local") == (
        "spiffe://example.org/ns/shop/sa/web",)
    assert push.service_identities("nothing.shop.svc.cluster.local") == ()


def test_identity_changes_are_reported_only_when_accounts_change() -> None:
    before = context(WORKLOADS)
    moved = context(WORKLOADS.replace("10.0.0.1", "10.0.0.9"))
    assert moved.derived_changes(before, frozenset({"Pod"})) == frozenset()
    renamed = context(WORKLOADS.replace("{serviceAccountName: web}",
                                        "{serviceAccountName: web-v2}"))
    assert renamed.derived_changes(before, frozenset({"Pod"})) == {
        push_context.SERVICE_IDENTITIES}
    # Only workload events can change identities: nothing is compared for others.
    assert renamed.derived_changes(before, frozenset({"VirtualService"})) == frozenset()
