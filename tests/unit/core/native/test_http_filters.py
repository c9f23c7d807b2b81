"""The native proxy's HTTP and network filters (RBAC, JWT, fault, CORS) on what the
translators emit, without sockets."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from google.protobuf import json_format

from pilotfish.core.native import http_filters, rbac, routing, subset
from pilotfish.core.objects import ConfigObject
from pilotfish.core.security_policies import AuthzPolicy
from pilotfish.translators import http_filters as translated_filters
from pilotfish.translators.common import pack
from pilotfish.translators.jwt_authn import jwt_filter
from pilotfish.translators.rbac import http_rbac_filters, network_rbac_filters
from pilotfish.translators.route_filters import cors, fault

WEB = "spiffe://cluster.local/ns/shop/sa/web"
ISSUER = "https://issuer.example.com"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def policy(name: str, rules: list[dict[str, Any]], action: str = "ALLOW") -> AuthzPolicy:
    return AuthzPolicy(name, "shop", action, tuple(rules))


ONLY_WEB = policy("only-web", [{"from": [{"source": {"principals": [
    "cluster.local/ns/shop/sa/web"]}}]}])
NO_ADMIN = policy("no-admin", [{"to": [{"operation": {"paths": ["/admin*"],
                                                     "methods": ["GET", "POST"]}}]}], "DENY")
JWT_PATHS = policy("jwt", [{"from": [{"source": {"notRequestPrincipals": ["*"]}}],
                            "to": [{"operation": {"paths": ["/secure"]}}]}], "DENY")
ALICE = policy("alice", [{"from": [{"source": {"notRequestPrincipals": [f"{ISSUER}/alice"]}}],
                          "to": [{"operation": {"paths": ["/alice/{*}"]}}]}], "DENY")


def request_authentication() -> ConfigObject:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    keys = json.dumps({"keys": [{**public, "kid": "k1", "alg": "RS256"}]})
    return ConfigObject("security.istio.io/v1", "RequestAuthentication", "jwt", "shop",
                        {"spec": {"jwtRules": [{"issuer": ISSUER, "jwks": keys,
                                            "outputClaimToHeaders": [
                                                {"header": "x-sub", "claim": "sub"}]}]}})


def token(sub: str, key: Any = KEY, **claims: Any) -> str:
    return jwt.encode({"iss": ISSUER, "sub": sub, "exp": int(time.time()) + 600, **claims},
                      key, algorithm="RS256", headers={"kid": "k1"})


def chain(auth: list[Any]) -> tuple[http_filters.HttpFilter, ...]:
    """What the native proxy compiles from the listener's HTTP filters."""
    filters = translated_filters.http_filters(auth)
    manager = hcm_pb2.HttpConnectionManager(http_filters=filters)
    subset.check(manager)
    return http_filters.compile_filters(manager.http_filters, "hcm")


PEER = rbac.Facts("10.0.0.5", destination=("10.0.0.9", 9080), principals=(WEB,),
                  authenticated=True)
INTRUDER = rbac.Facts("10.0.0.6", destination=("10.0.0.9", 9080),
                                     principals=("spiffe://cluster.local/ns/x/sa/y",),
                                     authenticated=True)


def status(filters: tuple[http_filters.HttpFilter, ...], path: str, peer: rbac.Facts = PEER,
           method: str = "GET", headers: list[tuple[str, str]] | None = None,
           per_route: dict[str, Any] | None = None) -> int:
    request = http_filters.Request(method, path, [("host", "web"), *(headers or [])], peer,
                                   per_route or {})
    outcome = http_filters.run(filters, request, random.Random(1))
    return outcome.answer.status if outcome.answer else 0


def test_http_rbac_allows_by_principal_and_denies_by_path_and_method():
    filters = chain(http_rbac_filters([ONLY_WEB, NO_ADMIN]))
    assert status(filters, "/") == 0
    assert status(filters, "/admin/users?x=1") == 403
    assert status(filters, "/admin/users", method="PUT") == 0
    assert status(filters, "/", INTRUDER) == 403
    assert status(filters, "/", rbac.Facts("10.0.0.5")) == 403  # no certificate


def test_network_rbac_has_no_http_attributes():
    allow = [rbac.rbac_filter(f) for f in _network(network_rbac_filters([ONLY_WEB]))]
    assert [g.decide(PEER)[0] for g in allow] == [True]
    assert [g.decide(INTRUDER)[0] for g in allow] == [False]
    assert allow[0].decide(INTRUDER)[1] == ["tcp.rbac.denied"]
    # DENY /admin* cannot be told on TCP: the rule loses its path and denies everything
    deny = [rbac.rbac_filter(f) for f in _network(network_rbac_filters([NO_ADMIN]))]
    assert [g.decide(PEER)[0] for g in deny] == [False]


def _network(filters: list[Any]) -> list[network_rbac_pb2.RBAC]:
    out = []
    for item in filters:
        message = subset.unpack(item.typed_config)
        assert isinstance(message, network_rbac_pb2.RBAC)
        out.append(message)
    return out


def test_dry_run_rules_are_counted_not_enforced():
    dry = AuthzPolicy("dry", "shop", "DENY", ({},), dry_run=True)
    filters = chain(http_rbac_filters([dry]))
    request = http_filters.Request("GET", "/", [("host", "web")], PEER)
    outcome = http_filters.run(filters, request, random.Random(1))
    assert outcome.answer is None
    assert outcome.counters == ("rbac.istio_dry_run_deny_shadow_denied",)


def test_jwt_missing_passes_invalid_fails_and_claims_reach_rbac():
    filters = chain([*jwt_filter([request_authentication()]),
                     *http_rbac_filters([JWT_PATHS, ALICE])])
    alice = [("authorization", f"Bearer {token('alice')}")]
    assert status(filters, "/open") == 0
    assert status(filters, "/secure") == 403
    assert status(filters, "/secure", headers=alice) == 0
    assert status(filters, "/alice/x", headers=alice) == 0
    assert status(filters, "/alice/x", headers=[("authorization",
                                                 f"Bearer {token('bob')}")]) == 403
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert status(filters, "/open", headers=[("authorization",
                                              f"Bearer {token('alice', other_key)}")]) == 401
    expired = token("alice", exp=int(time.time()) - 3600)
    assert status(filters, "/open", headers=[("authorization", f"Bearer {expired}")]) == 401
    assert status(filters, "/open", headers=[("authorization", "Bearer not.a.jwt")]) == 401


def test_a_verified_token_leaves_the_request_and_its_claims_become_headers():
    filters = chain(jwt_filter([request_authentication()]))
    request = http_filters.Request("GET", "/", [("host", "web"), (
        "authorization", f"Bearer {token('alice')}")], PEER)
    outcome = http_filters.run(filters, request, random.Random(1))
    assert outcome.answer is None
    assert dict(request.headers) == {"host": "web", "x-sub": "alice"}
    assert request.metadata["envoy.filters.http.jwt_authn"]["payload"]["sub"] == "alice"


def test_an_unknown_issuer_is_refused_with_envoys_reason():
    filters = chain(jwt_filter([request_authentication()]))
    stranger = jwt.encode({"iss": "https://elsewhere", "sub": "x"}, KEY, algorithm="RS256",
                          headers={"kid": "k1"})
    request = http_filters.Request("GET", "/", [("host", "web"),
                                                ("authorization", f"Bearer {stranger}")], PEER)
    outcome = http_filters.run(filters, request, random.Random(1))
    assert outcome.answer is not None and outcome.answer.status == 401
    assert outcome.answer.body == b"Jwt issuer is not configured"


def _route_with(per_filter: dict[str, Any]) -> dict[str, Any]:
    config = {
        "name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [{
            "match": {"prefix": "/"}, "route": {"cluster": "c"},
            "typed_per_filter_config": per_filter}]}]}
    message = json_format.ParseDict(config, route_pb2.RouteConfiguration())
    subset.check(message)
    decision = routing.compile_routes(message).route("web", "/", {})
    assert decision is not None
    return dict(decision.per_filter)


def _packed(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(pack(message))


def test_fault_aborts_and_delays_the_share_of_requests_a_route_says():
    aborting = fault({"abort": {"httpStatus": 503, "percentage": {"value": 100}}})
    per_route = _route_with({http_filters.FAULT: _packed(aborting)})
    filters = chain([])
    assert status(filters, "/", per_route=per_route) == 503
    half = fault({"abort": {"httpStatus": 500, "percentage": {"value": 50}},
                  "delay": {"fixedDelay": "0.2s", "percentage": {"value": 100}}})
    per_route = _route_with({http_filters.FAULT: _packed(half)})
    rng = random.Random(7)
    outcomes = [http_filters.run(filters, http_filters.Request("GET", "/", [], PEER, per_route),
                                 rng) for _ in range(400)]
    aborted = sum(1 for o in outcomes if o.answer is not None)
    assert 150 < aborted < 250
    assert all(o.delay == pytest.approx(0.2) for o in outcomes)
    assert {o.delay_flag for o in outcomes} == {"DI"}


def test_cors_answers_preflights_and_marks_allowed_origins():
    policy = cors({"allowOrigins": [{"exact": "https://shop.example"}],
                   "allowMethods": ["GET", "POST"], "allowHeaders": ["x-a"],
                   "exposeHeaders": ["x-b"], "maxAge": "1m", "allowCredentials": True})
    per_route = _route_with({http_filters.CORS: _packed(policy)})
    filters = chain([])
    preflight = http_filters.Request("OPTIONS", "/", [
        ("origin", "https://shop.example"), ("access-control-request-method", "POST")],
        PEER, per_route)
    answer = http_filters.run(filters, preflight, random.Random(1)).answer
    assert answer is not None and dict(answer.headers) == {
        "access-control-allow-origin": "https://shop.example",
        "access-control-allow-methods": "GET,POST", "access-control-allow-headers": "x-a",
        "access-control-expose-headers": "x-b", "access-control-max-age": "60",
        "access-control-allow-credentials": "true"}
    simple = http_filters.Request("GET", "/", [("origin", "https://shop.example")], PEER,
                                  per_route)
    assert http_filters.run(filters, simple, random.Random(1)).answer is None
    assert dict(simple.response_headers)["access-control-expose-headers"] == "x-b"
    stranger = http_filters.Request("OPTIONS", "/", [
        ("origin", "https://evil.example"), ("access-control-request-method", "POST")],
        PEER, per_route)
    assert http_filters.run(filters, stranger, random.Random(1)).answer is None  # forwarded
    assert not stranger.response_headers


def test_cors_policy_type_is_what_the_translator_packs():
    assert isinstance(cors({}), cors_pb2.CorsPolicy)


def test_ext_authz_without_a_service_the_proxy_can_call_is_refused_with_its_path():
    google = ext_authz_pb2.ExtAuthz()
    google.grpc_service.google_grpc.target_uri = "authz:9000"
    for config, path in [(google, "hcm.http_filters[0].typed_config.grpc_service.google_grpc"),
                         (ext_authz_pb2.ExtAuthz(), "hcm.http_filters[0].typed_config")]:
        manager = hcm_pb2.HttpConnectionManager(http_filters=[hcm_pb2.HttpFilter(
            name="envoy.filters.http.ext_authz", typed_config=pack(config))])
        with pytest.raises(subset.Unsupported) as refused:
            http_filters.compile_filters(manager.http_filters, "hcm")
        assert refused.value.path == path


def test_filter_chains_by_destination_prefix_then_source():
    from pilotfish.core.native import matchers
    from pilotfish.core.native.config import FilterChain, Listener, TcpProxy

    def block(text: str) -> matchers.Cidr:
        import ipaddress
        return matchers.Cidr(ipaddress.ip_network(text))

    listener = Listener("l", "0.0.0.0", 7000, (
        FilterChain("wide", 0, TcpProxy("c", "s"), prefixes=(block("10.0.0.0/8"),)),
        FilterChain("narrow", 0, TcpProxy("c", "s"), prefixes=(block("10.0.0.5/32"),)),
        FilterChain("from-lan", 0, TcpProxy("c", "s"), prefixes=(block("10.0.0.6/32"),),
                    sources=(block("192.168.0.0/16"),)),
        FilterChain("any", 0, TcpProxy("c", "s"))))
    assert listener.chain(7000, destination_ip="10.0.0.5").name == "narrow"
    assert listener.chain(7000, destination_ip="10.9.9.9").name == "wide"
    assert listener.chain(7000, destination_ip="172.16.0.1").name == "any"
    assert listener.chain(7000, destination_ip="10.0.0.6",
                          source=("192.168.1.1", 5)).name == "from-lan"
    assert listener.chain(7000, destination_ip="10.0.0.6", source=("8.8.8.8", 5)) is None


def test_cors_takes_an_exact_star_for_any_origin():
    policy = cors({"allowOrigins": [{"exact": "*"}], "allowMethods": ["PUT"]})
    per_route = _route_with({http_filters.CORS: _packed(policy)})
    preflight = http_filters.Request("OPTIONS", "/", [
        ("origin", "https://foobar.com"), ("access-control-request-method", "PUT")],
        PEER, per_route)
    answer = http_filters.run(chain([]), preflight, random.Random(1)).answer
    assert answer is not None
    assert dict(answer.headers)["access-control-allow-origin"] == "https://foobar.com"


def test_a_telemetrys_overrides_and_log_filter_are_read_from_the_loggers():
    from envoy.config.accesslog.v3 import accesslog_pb2
    from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
    from envoy.extensions.access_loggers.grpc.v3 import als_pb2
    from envoy.extensions.access_loggers.stream.v3 import stream_pb2

    from pilotfish.core.metric_overrides import ALL_OFF
    from pilotfish.core.native.config import HttpManager, _network

    als = als_pb2.HttpGrpcAccessLogConfig()
    als.common_config.log_name = 'pilotfish-metrics;{"REQUEST_COUNT": {"disabled": true}}'
    stdout = accesslog_pb2.AccessLog(name="envoy.access_loggers.stdout",
                                     typed_config=pack(stream_pb2.StdoutAccessLog()))
    stdout.filter.extension_filter.name = "envoy.access_loggers.extension_filters.cel"
    stdout.filter.extension_filter.typed_config.CopyFrom(pack(cel_pb2.ExpressionFilter(
        expression="response.code >= 400")))

    def manager(*logs: accesslog_pb2.AccessLog) -> HttpManager:
        message = hcm_pb2.HttpConnectionManager(stat_prefix="x", access_log=logs)
        message.route_config.name = "r"
        item = type("Filter", (), {"typed_config": pack(message), "name": "hcm"})()
        made = _network(item, "filters[0]")
        assert isinstance(made, HttpManager)
        return made

    logged = manager(stdout, accesslog_pb2.AccessLog(name="envoy.access_loggers.http_grpc",
                                                     typed_config=pack(als))).logging
    assert logged.access is not None and logged.access_when == ("response.code >= 400",)
    assert logged.metrics.disabled == frozenset({"istio_requests_total"})
    assert manager(stdout).logging.metrics is ALL_OFF  # no metrics logger: none counted


def test_cors_wildcard_methods_and_headers_answer_what_the_preflight_asks():
    policy = cors({"allowOrigins": [{"exact": "*"}], "allowMethods": ["*"],
                   "allowHeaders": ["*"], "allowCredentials": True})
    per_route = _route_with({http_filters.CORS: _packed(policy)})
    preflight = http_filters.Request("OPTIONS", "/", [
        ("origin", "https://other.foo.com"), ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "x-header-1, x-header-2")], PEER, per_route)
    answer = http_filters.run(chain([]), preflight, random.Random(1)).answer
    assert answer is not None
    headers = dict(answer.headers)
    assert headers["access-control-allow-methods"] == "PUT"
    assert headers["access-control-allow-headers"] == "x-header-1, x-header-2"
    assert headers["access-control-allow-credentials"] == "true"
