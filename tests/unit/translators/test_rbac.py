"""AuthorizationPolicy → Envoy RBAC: every attribute, the actions, TCP and the filters."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from google.protobuf import json_format

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import parse_node
from pilotfish.core.security_policies import AuthzPolicy
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.testing.generators import generate
from pilotfish.translators.rbac import action_rules, rule_policy

JWT = "envoy.filters.http.jwt_authn"


def as_dict(message: Any) -> Any:
    return json_format.MessageToDict(message)


def principal(rule: dict[str, Any], tcp: bool = False, action: str = "ALLOW") -> Any:
    built = rule_policy(rule, tcp=tcp, action=action)
    assert built is not None
    (only,) = built.principals
    return as_dict(only)


def permission(rule: dict[str, Any], tcp: bool = False, action: str = "ALLOW") -> Any:
    built = rule_policy(rule, tcp=tcp, action=action)
    assert built is not None
    (only,) = built.permissions
    return as_dict(only)


def source(**fields: Any) -> dict[str, Any]:
    return {"from": [{"source": fields}]}


def operation(**fields: Any) -> dict[str, Any]:
    return {"to": [{"operation": fields}]}


def peer(matcher: dict[str, Any]) -> dict[str, Any]:
    return {"authenticated": {"principalName": matcher}}


def claim(path: list[str], value: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"filter": JWT, "path": [{"key": k} for k in ["payload", *path]],
                         "value": value}}


def claim_either(path: list[str], matcher: dict[str, Any]) -> dict[str, Any]:
    return {"orIds": {"ids": [claim(path, {"stringMatch": matcher}),
                              claim(path, {"listMatch": {"oneOf": {"stringMatch": matcher}}})]}}


# -- sources -------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "matcher"), [
    ("cluster.local/ns/shop/sa/web", {"exact": "spiffe://cluster.local/ns/shop/sa/web"}),
    ("*", {"safeRegex": {"regex": "spiffe://.+"}}),
    ("cluster.local/ns/shop/*", {"prefix": "spiffe://cluster.local/ns/shop/"}),
    ("*/sa/web", {"safeRegex": {"regex": "spiffe://.*/sa/web"}}),
])
def test_principals_match_the_peer_spiffe_id(value: str, matcher: dict[str, Any]) -> None:
    assert principal(source(principals=[value])) == peer(matcher)


def test_values_are_ored_and_not_variants_negate() -> None:
    both = principal(source(principals=["a/ns/x/sa/y", "b/ns/x/sa/y"]))
    assert both == {"orIds": {"ids": [peer({"exact": "spiffe://a/ns/x/sa/y"}),
                                      peer({"exact": "spiffe://b/ns/x/sa/y"})]}}
    assert principal(source(notPrincipals=["a/ns/x/sa/y"])) == {
        "notId": peer({"exact": "spiffe://a/ns/x/sa/y"})}


def test_namespaces_service_accounts_and_trust_domains() -> None:
    assert principal(source(namespaces=["shop"])) == peer(
        {"safeRegex": {"regex": "spiffe://[^/]+/ns/shop/.*"}})
    assert principal(source(notNamespaces=["dev*"])) == {"notId": peer(
        {"safeRegex": {"regex": "spiffe://[^/]+/ns/dev[^/]*/.*"}})}
    assert principal(source(serviceAccounts=["shop/web"])) == peer(
        {"safeRegex": {"regex": "spiffe://[^/]+/ns/shop/sa/web"}})
    assert principal(source(trustDomains=["example.org"])) == peer(
        {"prefix": "spiffe://example.org/"})


def test_ip_blocks_match_the_peer_and_remote_ip_blocks_the_client() -> None:
    assert principal(source(ipBlocks=["10.1.0.0/16"])) == {
        "directRemoteIp": {"addressPrefix": "10.1.0.0", "prefixLen": 16}}
    assert principal(source(notIpBlocks=["10.1.2.3"])) == {
        "notId": {"directRemoteIp": {"addressPrefix": "10.1.2.3", "prefixLen": 32}}}
    assert principal(source(remoteIpBlocks=["192.0.2.0/24"])) == {
        "remoteIp": {"addressPrefix": "192.0.2.0", "prefixLen": 24}}


@pytest.mark.parametrize(("value", "expected"), [
    ("https://issuer.example.com/alice", {"andIds": {"ids": [
        claim_either(["iss"], {"exact": "https://issuer.example.com"}),
        claim_either(["sub"], {"exact": "alice"})]}}),
    ("*", claim(["iss"], {"presentMatch": True})),
    ("https://issuer.example.com/*", {"andIds": {"ids": [
        claim_either(["iss"], {"exact": "https://issuer.example.com"}),
        claim(["sub"], {"presentMatch": True})]}}),
    ("*/alice", {"andIds": {"ids": [
        claim(["iss"], {"presentMatch": True}), claim_either(["sub"], {"exact": "alice"})]}}),
])
def test_request_principals_match_the_jwt_payload(value: str, expected: Any) -> None:
    assert principal(source(requestPrincipals=[value])) == expected


def test_fields_of_one_source_are_anded_and_sources_ored() -> None:
    rule = {"from": [{"source": {"namespaces": ["a"], "ipBlocks": ["10.0.0.1"]}},
                     {"source": {"namespaces": ["b"]}}]}
    found = principal(rule)
    first, second = found["orIds"]["ids"]
    assert set(first["andIds"]["ids"][0]) == {"directRemoteIp"}  # fields sorted by name
    assert second == peer({"safeRegex": {"regex": "spiffe://[^/]+/ns/b/.*"}})


# -- operations ----------------------------------------------------------------------------


def test_hosts_methods_paths_and_ports() -> None:
    assert permission(operation(hosts=["Web.Example.com"])) == {"header": {
        "name": ":authority", "stringMatch": {"exact": "Web.Example.com", "ignoreCase": True}}}
    assert permission(operation(hosts=["*.example.com"]))["header"]["stringMatch"] == {
        "suffix": ".example.com", "ignoreCase": True}
    assert permission(operation(hosts=["*"])) == {"header": {"name": ":authority",
                                                              "presentMatch": True}}
    assert permission(operation(methods=["GET"])) == {"header": {
        "name": ":method", "stringMatch": {"exact": "GET"}}}
    assert permission(operation(ports=["8080"])) == {"destinationPort": 8080}
    assert permission(operation(notPorts=["22"])) == {"notRule": {"destinationPort": 22}}


@pytest.mark.parametrize(("value", "matcher"), [
    ("/api/v1", {"urlPath": {"path": {"exact": "/api/v1"}}}),
    ("/api/*", {"urlPath": {"path": {"prefix": "/api/"}}}),
    ("*.html", {"urlPath": {"path": {"suffix": ".html"}}}),
    ("*", {"urlPath": {"path": {"safeRegex": {"regex": ".*"}}}}),
])
def test_paths_exact_prefix_suffix_and_any(value: str, matcher: dict[str, Any]) -> None:
    assert permission(operation(paths=[value])) == matcher


def test_path_templates_use_envoys_uri_template_matcher() -> None:
    found = permission(operation(paths=["/users/{*}/orders/{**}"]))
    assert found["uriTemplate"]["name"] == "envoy.path.match.uri_template"
    assert found["uriTemplate"]["typedConfig"]["pathTemplate"] == "/users/*/orders/**"


def test_a_template_envoy_cannot_take_fails_closed() -> None:
    bad = operation(paths=["/a/{**}/b/{*}"])
    assert rule_policy(bad, tcp=False, action="ALLOW") is None
    assert permission(bad, action="DENY") == {"any": True}


def test_not_paths_and_not_methods() -> None:
    found = permission(operation(notPaths=["/admin*"], notMethods=["DELETE"]))
    assert found == {"andRules": {"rules": [
        {"notRule": {"header": {"name": ":method", "stringMatch": {"exact": "DELETE"}}}},
        {"notRule": {"urlPath": {"path": {"prefix": "/admin"}}}},
    ]}}


# -- conditions ----------------------------------------------------------------------------


def when(key: str, values: list[str] | None = None, not_values: list[str] | None = None
         ) -> dict[str, Any]:
    condition: dict[str, Any] = {"key": key}
    if values:
        condition["values"] = values
    if not_values:
        condition["notValues"] = not_values
    return {"when": [condition]}


def test_destination_conditions_join_the_permission() -> None:
    assert permission(when("destination.port", ["8080"])) == {"destinationPort": 8080}
    assert permission(when("destination.ip", ["10.0.0.5"])) == {
        "destinationIp": {"addressPrefix": "10.0.0.5", "prefixLen": 32}}
    assert permission(when("connection.sni", ["*.example.com"])) == {
        "requestedServerName": {"suffix": ".example.com"}}


def test_caller_conditions_join_the_principal() -> None:
    assert principal(when("source.ip", ["10.0.0.0/8"])) == {
        "directRemoteIp": {"addressPrefix": "10.0.0.0", "prefixLen": 8}}
    assert principal(when("remote.ip", ["192.0.2.1"])) == {
        "remoteIp": {"addressPrefix": "192.0.2.1", "prefixLen": 32}}
    assert principal(when("source.namespace", ["shop"])) == peer(
        {"safeRegex": {"regex": "spiffe://[^/]+/ns/shop/.*"}})
    assert principal(when("source.principal", ["td/ns/a/sa/b"])) == peer(
        {"exact": "spiffe://td/ns/a/sa/b"})
    assert principal(when("request.headers[x-user]", ["alice"], ["bob"])) == {"andIds": {
        "ids": [{"header": {"name": "x-user", "stringMatch": {"exact": "alice"}}},
                {"notId": {"header": {"name": "x-user", "stringMatch": {"exact": "bob"}}}}]}}


def test_jwt_conditions_read_the_payload() -> None:
    assert principal(when("request.auth.audiences", ["shop"])) == claim_either(
        ["aud"], {"exact": "shop"})
    assert principal(when("request.auth.presenter", ["web-app"])) == claim_either(
        ["azp"], {"exact": "web-app"})
    assert principal(when("request.auth.claims[realm][role]", ["admin"])) == claim_either(
        ["realm", "role"], {"exact": "admin"})
    assert principal(when("request.auth.principal", ["iss/sub"])) == {"andIds": {"ids": [
        claim_either(["iss"], {"exact": "iss"}), claim_either(["sub"], {"exact": "sub"})]}}


def test_a_rule_without_fields_matches_everything() -> None:
    assert principal({}) == {"any": True} and permission({}) == {"any": True}


# -- TCP, unsupported keys -----------------------------------------------------------------


def test_on_tcp_an_allow_rule_with_http_attributes_is_left_out() -> None:
    assert rule_policy(operation(paths=["/a"]), tcp=True, action="ALLOW") is None
    assert rule_policy(when("request.headers[x]", ["y"]), tcp=True, action="ALLOW") is None
    assert rule_policy(source(requestPrincipals=["*"]), tcp=True, action="ALLOW") is None
    kept = rule_policy(operation(ports=["5432"]), tcp=True, action="ALLOW")
    assert kept is not None


def test_on_tcp_a_deny_rule_loses_http_attributes_and_matches_more() -> None:
    rule = {"from": [{"source": {"namespaces": ["evil"]}}],
            "to": [{"operation": {"methods": ["POST"], "ports": ["5432"]}}]}
    assert permission(rule, tcp=True, action="DENY") == {"destinationPort": 5432}
    only_http = operation(paths=["/admin"])
    assert permission(only_http, tcp=True, action="DENY") == {"any": True}
    assert permission(only_http, tcp=True, action="AUDIT") == {"any": True}


def test_unsupported_conditions_fail_closed() -> None:
    key = "experimental.envoy.filters.network.mysql_proxy[db.table]"
    assert rule_policy(when(key, ["a"]), tcp=False, action="ALLOW") is None
    assert permission(when(key, ["a"]), action="DENY") == {"any": True}


# -- actions and filters ---------------------------------------------------------------------


def policy(name: str, action: str, rules: list[dict[str, Any]],
           dry_run: bool = False) -> AuthzPolicy:
    return AuthzPolicy(name=name, namespace="shop", action=action, rules=tuple(rules),
                       dry_run=dry_run)


def test_one_rbac_per_action_in_audit_deny_allow_order_with_istio_keys() -> None:
    found = action_rules([
        policy("allow", "ALLOW", [source(namespaces=["a"]), operation(ports=["1"])]),
        policy("deny", "DENY", [{}]),
        policy("audit", "AUDIT", [{}]),
    ], tcp=False)
    assert [(r.action, as_dict(r.rules).get("action", "ALLOW")) for r in found] == [
        ("AUDIT", "LOG"), ("DENY", "DENY"), ("ALLOW", "ALLOW")]
    assert sorted(found[2].rules.policies) == [  # type: ignore[union-attr]
        "ns[shop]-policy[allow]-rule[0]", "ns[shop]-policy[allow]-rule[1]"]


def test_an_allow_policy_without_rules_allows_nothing() -> None:
    (allow,) = action_rules([policy("nothing", "ALLOW", [])], tcp=False)
    assert allow.rules is not None and not allow.rules.policies  # Envoy: deny all


def test_dry_run_policies_go_to_shadow_rules() -> None:
    (deny,) = action_rules([policy("try", "DENY", [{}], dry_run=True)], tcp=False)
    assert deny.rules is None and deny.shadow is not None
    assert deny.shadow_prefix == "istio_dry_run_deny_"


# -- on listeners -----------------------------------------------------------------------------

CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: tcp-db, port: 5432}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-evil, namespace: shop}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [evil]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reads, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{to: [{operation: {methods: [GET]}}]}, {to: [{operation: {ports: ["5432"]}}]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec: {jwtRules: [{issuer: issuer.example.com, jwks: '{"keys": [{"kty": "oct", "k": "a2V5"}]}'}]}
"""


def virtual_inbound() -> listener_pb2.Listener:
    objects, errors = load_text(CONFIG, "test.yaml")
    assert not errors, errors
    push = push_context.build(objects, MeshSettings(), "v1")
    proxy = parse_node("sidecar~10.0.0.5~web-1.shop~shop.svc.cluster.local",
                       {"LABELS": {"app": "web"}})
    (found,) = [item for item in generate(types.LISTENER, push, proxy, {})
                if item.name == "virtualInbound"]
    return found


def test_http_chains_run_jwt_then_rbac_before_the_router() -> None:
    for chain in virtual_inbound().filter_chains[1:]:
        last = chain.filters[-1]
        if not last.name.endswith("http_connection_manager"):
            continue
        manager = hcm_pb2.HttpConnectionManager()
        assert last.typed_config.Unpack(manager)
        assert [f.name for f in manager.http_filters] == [
            JWT, "envoy.filters.http.rbac", "envoy.filters.http.rbac",
            "envoy.filters.http.fault", "envoy.filters.http.cors", "envoy.filters.http.router"]
        deny, allow = (http_rbac_pb2.RBAC(), http_rbac_pb2.RBAC())
        assert manager.http_filters[1].typed_config.Unpack(deny)
        assert manager.http_filters[2].typed_config.Unpack(allow)
        assert sorted(allow.rules.policies) == [
            "ns[shop]-policy[reads]-rule[0]", "ns[shop]-policy[reads]-rule[1]"]


def test_tcp_chains_run_network_rbac_before_tcp_proxy() -> None:
    for chain in virtual_inbound().filter_chains[1:]:
        if not chain.filters[-1].name.endswith("tcp_proxy"):
            continue
        assert [f.name for f in chain.filters] == [
            "envoy.filters.network.rbac", "envoy.filters.network.rbac",
            "envoy.filters.network.tcp_proxy"]
        allow = network_rbac_pb2.RBAC()
        assert chain.filters[1].typed_config.Unpack(allow)
        assert allow.stat_prefix == "tcp."
        # The GET rule cannot hold on TCP and is left out; the port rule stays.
        assert sorted(allow.rules.policies) == ["ns[shop]-policy[reads]-rule[1]"]



CUSTOM = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: shop}
spec:
  action: CUSTOM
  provider: {name: NAME}
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
"""


def test_custom_policies_mark_requests_for_the_ext_authz_provider():
    from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2

    from pilotfish.core.meshconfig import from_dict
    from pilotfish.translators import ext_authz

    mesh = from_dict({"mesh": {"extensionProviders": [
        {"name": "opa", "envoyExtAuthzGrpc": {"service": "opa.authz.svc.cluster.local",
                                              "port": 9191}},
        {"name": "http", "envoyExtAuthzHttp": {"service": "authz/ext.authz.svc.cluster.local",
                                               "port": 8000, "headersToUpstreamOnAllow":
                                               ["x-user"], "failOpen": True}}]}}).mesh
    proxy = parse_node("sidecar~10.0.0.1~a.shop~shop.svc.cluster.local")

    def filters(provider: str) -> list[Any]:
        objects, errors = load_text(CUSTOM.replace("NAME", provider), "p.yaml")
        assert not errors
        push = push_context.build(objects, mesh, "v1")
        return ext_authz.http_filters(push, push.authorization_policies(proxy))

    marker, check = filters("http")
    assert marker.name == "envoy.filters.http.rbac"
    config = ext_authz_pb2.ExtAuthz()
    assert check.typed_config.Unpack(config)
    assert config.http_service.server_uri.cluster == "outbound|8000||ext.authz.svc.cluster.local"
    assert config.failure_mode_allow
    assert [p.exact for p in config.http_service.authorization_response
            .allowed_upstream_headers.patterns] == ["x-user"]
    assert config.filter_enabled_metadata.value.string_match.prefix == "istio-ext-authz-"
    (_, check) = filters("opa")
    assert check.typed_config.Unpack(config)
    assert config.grpc_service.envoy_grpc.cluster_name == (
        "outbound|9191||opa.authz.svc.cluster.local")
    # A provider the mesh config does not define: the rules deny (fail closed).
    (deny,) = filters("nothere")
    rules = http_rbac_pb2.RBAC()
    assert deny.typed_config.Unpack(rules) and rules.rules.action == rules.rules.DENY
