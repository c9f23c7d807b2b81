"""Route matching as Envoy does it, without sockets."""

from __future__ import annotations

import re2  # type: ignore[import-untyped]
from envoy.config.route.v3 import route_components_pb2, route_pb2
from google.protobuf import json_format

from pilotfish.core.native import routing


def table(config: dict) -> routing.RouteTable:
    return routing.compile_routes(json_format.ParseDict(config, route_pb2.RouteConfiguration()))


def route(prefix: str, cluster: str, **extra: object) -> dict:
    return {"match": {"prefix": prefix, **extra}, "route": {"cluster": cluster}}


ROUTES = table({"name": "http.80", "ignore_port_in_host_matching": True, "virtual_hosts": [
    {"name": "exact", "domains": ["api.example.com"], "routes": [
        route("/v2", "v2", headers=[{"name": "x-canary", "string_match": {"exact": "1"}}]),
        {"match": {"path": "/exact"}, "direct_response": {"status": 418}},
        {"match": {"safe_regex": {"regex": "/re/[0-9]+"}}, "route": {"cluster": "re"}},
        route("/", "api")]},
    {"name": "suffix", "domains": ["*.example.com"], "routes": [route("/", "suffix")]},
    {"name": "prefix", "domains": ["api.*"], "routes": [route("/", "prefix")]},
    {"name": "any", "domains": ["*"], "routes": [
        {"match": {"prefix": "/old"}, "redirect": {"path_redirect": "/new",
                                                   "response_code": "FOUND"}},
        route("/", "fallback")]},
]})


def cluster_of(authority: str, path: str, headers: dict | None = None) -> str:
    decision = ROUTES.route(authority, path, headers or {})
    assert decision is not None
    action = decision.route.action
    assert isinstance(action, routing.Forward)
    return action.cluster(0)[0]


def test_virtual_hosts_exact_then_suffix_then_prefix_then_any():
    assert cluster_of("api.example.com", "/") == "api"
    assert cluster_of("api.example.com:8080", "/") == "api"  # the port is ignored
    assert cluster_of("web.example.com", "/") == "suffix"
    assert cluster_of("api.other.org", "/") == "prefix"
    assert cluster_of("elsewhere", "/") == "fallback"


def test_first_matching_route_wins_with_headers_and_regex():
    assert cluster_of("api.example.com", "/v2/x", {"x-canary": "1"}) == "v2"
    assert cluster_of("api.example.com", "/v2/x") == "api"
    assert cluster_of("api.example.com", "/re/42") == "re"
    assert cluster_of("api.example.com", "/re/4x") == "api"  # full match only
    decision = ROUTES.route("api.example.com", "/exact?q=1", {})
    assert decision is not None and decision.route.action == routing.Respond(418)


def test_redirects_say_where():
    decision = ROUTES.route("host:8080", "/old/x?a=1", {})
    assert decision is not None
    action = decision.route.action
    assert isinstance(action, routing.Redirect)
    answer = action.answer("http", "host:8080", "/old/x?a=1", "/old")
    assert answer.status == 302 and dict(answer.headers)["location"] == \
        "http://host:8080/new?a=1"


def test_weighted_clusters_by_draw():
    weighted = table({"name": "w", "virtual_hosts": [{"name": "*", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
            {"name": "a", "weight": 90}, {"name": "b", "weight": 10}]}}}]}]})
    decision = weighted.route("x", "/", {})
    assert decision is not None
    action = decision.route.action
    assert isinstance(action, routing.Forward) and action.total_weight == 100
    assert [action.cluster(n)[0] for n in (0, 89, 90, 99)] == ["a", "a", "b", "b"]


def test_retry_policy_and_header_edits():
    config = table({"name": "r", "virtual_hosts": [{"name": "*", "domains": ["*"], "routes": [{
        "match": {"prefix": "/"},
        "request_headers_to_add": [{"header": {"key": "X-Added", "value": "1"},
                                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
        "request_headers_to_remove": ["x-secret"],
        "route": {"cluster": "c", "timeout": "2s", "retry_policy": {
            "retry_on": "connect-failure,retriable-status-codes", "num_retries": 3,
            "retriable_status_codes": [503]}}}]}]})
    decision = config.route("x", "/", {})
    assert decision is not None
    action = decision.route.action
    assert isinstance(action, routing.Forward) and action.timeout == 2.0
    assert action.retry is not None and action.retry.num_retries == 3
    assert action.retry.retries_connect_failure and action.retry.retries_status(503)
    assert not action.retry.retries_status(500)
    edited = decision.request_edits.apply([("x-secret", "s"), ("x-added", "0"), ("a", "b")])
    assert edited == [("a", "b"), ("x-added", "1")]


def test_mirrors_keep_their_share():
    mirrored = table({"name": "m", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "main", "request_mirror_policies": [
            {"cluster": "all"},
            {"cluster": "tenth", "runtime_fraction": {"default_value": {
                "numerator": 10, "denominator": "HUNDRED"}}}]}}]}]})
    decision = mirrored.route("web", "/", {})
    assert decision is not None and isinstance(decision.route.action, routing.Forward)
    assert decision.route.action.mirrors == (("all", 1.0), ("tenth", 0.1))


def test_redirects_build_the_location_as_envoy_does():
    def location(redirect: dict, authority: str = "web:8080", scheme: str = "http",
                 path: str = "/a/b?q=1") -> str:
        answer = routing._action(json_format.ParseDict(
            {"match": {"prefix": "/a"}, "redirect": redirect},
            route_components_pb2.Route()))
        assert isinstance(answer, routing.Redirect)
        return dict(answer.answer(scheme, authority, path, "/a").headers)["location"]

    assert location({"host_redirect": "example.org"}) == "http://example.org/a/b?q=1"
    assert location({"host_redirect": "example.org", "port_redirect": 8443}) == \
        "http://example.org:8443/a/b?q=1"
    assert location({"scheme_redirect": "https"}, "web:80") == "https://web/a/b?q=1"
    assert location({"scheme_redirect": "https"}) == "https://web:8080/a/b?q=1"
    assert location({"prefix_rewrite": "/z"}) == "http://web:8080/z/b?q=1"
    assert location({"regex_rewrite": {"pattern": {"regex": "^/a(/.*)?$"},
                                       "substitution": "/x\\1"}}) == "http://web:8080/x/b?q=1"
    assert location({"path_redirect": "/new", "strip_query": True}) == "http://web:8080/new"


def test_a_regex_rewrite_keeps_the_query():
    rewrite = routing.RegexRewrite(re2.compile("^/prefix/one"), "/one")
    assert routing.rewrite_path("/prefix/one/two?x=1", "", "", rewrite) == "/one/two?x=1"
    assert routing.rewrite_path("/p/rest?y", "/p", "/q", None) == "/q/rest?y"
