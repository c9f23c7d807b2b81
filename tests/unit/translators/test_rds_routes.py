"""VirtualService http[] → Envoy routes: every HTTPRoute feature, field by field."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import (
    previous_priorities_config_pb2,
)
from envoy.type.v3 import percent_pb2

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import Proxy, parse_node
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.testing.generators import generate

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 9080}, {name: http-admin, port: 9081}]
---
apiVersion: v1
kind: Service
metadata: {name: mirror, namespace: test}
spec:
  clusterIP: 10.96.0.12
  ports: [{name: http, port: 8080}]
"""
HOST = "reviews.default.svc.cluster.local"
SIDECAR = parse_node("sidecar~10.1.0.1~app-1.default~default.svc.cluster.local",
                     {"LABELS": {"app": "productpage", "version": "v1"}})
MILLION = percent_pb2.FractionalPercent.MILLION


def routes(http: str, *, extra: str = "", proxy: Proxy = SIDECAR,
           mesh: MeshSettings | None = None, port: int = 9080) -> list[rc.Route]:
    """The routes of reviews' virtual host for a VirtualService with the given http[]."""
    text = SERVICES + extra + f"""\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews-vs, namespace: default}}
spec:
  hosts: [reviews]
  http:
{http}"""
    objects, errors = load_text(text, "vs.yaml")
    assert not errors
    push = push_context.build(objects, mesh or MeshSettings(), "v1")
    configs = {c.name: c for c in generate(types.ROUTE, push, proxy, {})}
    hosts = {v.name: v for v in configs[str(port)].virtual_hosts}
    return list(hosts[f"{HOST}:{port}"].routes)


def only(http: str, **kwargs: object) -> rc.Route:
    found = routes(http, **kwargs)  # type: ignore[arg-type]
    assert len(found) == 1, [r.name for r in found]
    return found[0]


# -- match ---------------------------------------------------------------------------------


def test_uri_exact_prefix_regex_and_no_match() -> None:
    found = routes("""\
  - match: [{uri: {exact: /a}}, {uri: {prefix: /b}}, {uri: {regex: "/c/[0-9]+"}}]
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
""")
    assert [r.match.WhichOneof("path_specifier") for r in found] == [
        "path", "prefix", "safe_regex", "prefix"]
    assert found[0].match.path == "/a"
    assert found[1].match.prefix == "/b"
    assert found[2].match.safe_regex.regex == "/c/[0-9]+"
    assert found[3].match.prefix == "/"
    assert not found[3].match.HasField("case_sensitive")


def test_ignore_uri_case() -> None:
    route = only("""\
  - match: [{uri: {prefix: /Api}, ignoreUriCase: true}]
    route: [{destination: {host: reviews}}]
""")
    assert route.match.case_sensitive.value is False


def test_headers_sorted_with_presence_and_pseudo_headers_last() -> None:
    route = only("""\
  - match:
    - headers:
        x-b: {prefix: beta}
        x-a: {exact: alpha}
        x-c: {regex: "^c.*"}
        x-any: {regex: "*"}
        x-empty: {}
      method: {exact: POST}
      authority: {prefix: reviews}
      scheme: {exact: https}
    route: [{destination: {host: reviews}}]
""")
    headers = {h.name: h for h in route.match.headers}
    assert [h.name for h in route.match.headers] == [
        "x-a", "x-any", "x-b", "x-c", "x-empty", ":method", ":authority", ":scheme"]
    assert headers["x-a"].string_match.exact == "alpha"
    assert headers["x-b"].string_match.prefix == "beta"
    assert headers["x-c"].string_match.safe_regex.regex == "^c.*"
    assert headers["x-any"].present_match and headers["x-empty"].present_match
    assert headers[":method"].string_match.exact == "POST"
    assert headers[":authority"].string_match.prefix == "reviews"
    assert headers[":scheme"].string_match.exact == "https"


def test_without_headers_invert_and_treat_missing_as_empty() -> None:
    route = only("""\
  - match: [{withoutHeaders: {x-canary: {exact: "true"}, x-debug: {}}}]
    route: [{destination: {host: reviews}}]
""")
    canary, debug = route.match.headers
    assert canary.name == "x-canary" and canary.invert_match
    assert canary.treat_missing_header_as_empty
    assert canary.string_match.exact == "true"
    # "without header x-debug" = x-debug absent
    assert debug.name == "x-debug" and debug.WhichOneof("header_match_specifier") == (
        "present_match") and not debug.present_match


def test_query_params() -> None:
    route = only("""\
  - match: [{queryParams: {v: {exact: "2"}, debug: {regex: "*"}, p: {prefix: x}}}]
    route: [{destination: {host: reviews}}]
""")
    params = {q.name: q for q in route.match.query_parameters}
    assert params["v"].string_match.exact == "2"
    assert params["p"].string_match.prefix == "x"
    assert params["debug"].present_match


def test_route_names_from_rule_and_match_names() -> None:
    found = routes("""\
  - name: canary
    match: [{name: by-header, headers: {x: {exact: "1"}}}, {uri: {prefix: /c}}]
    route: [{destination: {host: reviews}}]
""")
    assert [r.name for r in found] == ["canary.by-header", "canary"]


def test_source_labels_and_namespace_are_decided_per_proxy() -> None:
    http = """\
  - match: [{sourceLabels: {app: productpage}, uri: {prefix: /pp}}]
    route: [{destination: {host: reviews}}]
  - match: [{sourceNamespace: other, uri: {prefix: /other}}]
    route: [{destination: {host: reviews}}]
  - match: [{sourceLabels: {app: ratings}, uri: {prefix: /ratings}}]
    route: [{destination: {host: reviews}}]
"""
    assert [r.match.prefix for r in routes(http)] == ["/pp"]
    other = parse_node("sidecar~10.1.0.2~r-1.other~other.svc.cluster.local",
                       {"LABELS": {"app": "ratings"}})
    assert [r.match.prefix for r in routes(http, proxy=other)] == ["/other", "/ratings"]


def test_match_gateways_mesh_only() -> None:
    found = routes("""\
  - match:
    - {gateways: [mesh], uri: {prefix: /mesh}}
    - {gateways: [istio-system/gw], uri: {prefix: /gw}}
    route: [{destination: {host: reviews}}]
""")
    assert [r.match.prefix for r in found] == ["/mesh"]


def test_match_port_restricts_route_to_that_route_config() -> None:
    text = SERVICES + """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - match: [{port: 9081, uri: {prefix: /admin}}]
    route: [{destination: {host: ratings, port: {number: 9081}}}]
  - route: [{destination: {host: ratings}}]
"""
    objects, _ = load_text(text, "vs.yaml")
    push = push_context.build(objects, MeshSettings(), "v1")
    configs = {c.name: c for c in generate(types.ROUTE, push, SIDECAR, {})}

    def prefixes(port: int) -> list[str]:
        vhost = next(v for v in configs[str(port)].virtual_hosts
                     if v.name == f"ratings.default.svc.cluster.local:{port}")
        return [r.match.prefix for r in vhost.routes]

    assert prefixes(9081) == ["/admin", "/"]
    assert prefixes(9080) == ["/"]


def test_generation_stops_after_a_catch_all() -> None:
    found = routes("""\
  - match: [{uri: {prefix: /a}}, {uri: {prefix: /}}, {uri: {prefix: /never}}]
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
""")
    assert [r.match.prefix for r in found] == ["/a", "/"]


def test_a_rule_without_matches_ends_the_list() -> None:
    found = routes("""\
  - route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /late}}]
    route: [{destination: {host: reviews}}]
""")
    assert len(found) == 1


# -- destinations ----------------------------------------------------------------------------


def test_single_destination_cluster_and_port_rules() -> None:
    found = routes("""\
  - match: [{uri: {prefix: /explicit}}]
    route: [{destination: {host: ratings, port: {number: 9081}, subset: v2}}]
  - match: [{uri: {prefix: /only-port}}]
    route: [{destination: {host: mirror.test.svc.cluster.local}}]
  - match: [{uri: {prefix: /listener}}]
    route: [{destination: {host: ratings}}]
  - route: [{destination: {host: unknown.example.com}}]
""")
    assert [r.route.cluster for r in found] == [
        "outbound|9081|v2|ratings.default.svc.cluster.local",
        "outbound|8080||mirror.test.svc.cluster.local",
        "outbound|9080||ratings.default.svc.cluster.local",
        "outbound|9080||unknown.example.com",
    ]


def test_weighted_destinations_drop_zero_and_carry_headers() -> None:
    route = only("""\
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 75
      headers: {request: {set: {x-version: v1}}, response: {remove: [x-internal]}}
    - destination: {host: reviews, subset: v2}
      weight: 25
    - destination: {host: reviews, subset: v3}
      weight: 0
""")
    clusters = route.route.weighted_clusters.clusters
    assert [(c.name, c.weight.value) for c in clusters] == [
        (f"outbound|9080|v1|{HOST}", 75), (f"outbound|9080|v2|{HOST}", 25)]
    assert not route.route.weighted_clusters.HasField("total_weight")
    assert clusters[0].request_headers_to_add[0].header.key == "x-version"
    assert list(clusters[0].response_headers_to_remove) == ["x-internal"]
    assert route.decorator.operation == "reviews-vs:9080/*"


def test_weights_left_out_split_evenly() -> None:
    route = only("""\
  - route:
    - destination: {host: reviews, subset: v1}
    - destination: {host: reviews, subset: v2}
""")
    assert [c.weight.value for c in route.route.weighted_clusters.clusters] == [1, 1]


def test_rule_with_nowhere_to_go_is_left_out() -> None:
    found = routes("""\
  - match: [{uri: {prefix: /nothing}}]
    timeout: 1s
  - route: [{destination: {host: reviews}}]
""")
    assert [r.match.prefix for r in found] == ["/"]


def test_single_destination_headers_go_on_the_route() -> None:
    route = only("""\
  - route:
    - destination: {host: reviews}
      headers: {request: {add: {x-dest: d}, set: {host: override.example.com}}}
""")
    assert [h.header.key for h in route.request_headers_to_add] == ["x-dest"]
    assert route.route.host_rewrite_literal == "override.example.com"


# -- timeouts and retries ------------------------------------------------------------------------


def test_timeout_default_disabled_and_explicit() -> None:
    found = routes("""\
  - match: [{uri: {prefix: /slow}}]
    timeout: 1.5s
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
""")
    assert found[0].route.timeout.seconds == 1 and found[0].route.timeout.nanos == 500_000_000
    assert found[0].route.max_grpc_timeout == found[0].route.timeout
    assert found[1].route.HasField("timeout") and found[1].route.timeout.seconds == 0
    assert found[1].route.max_grpc_timeout.seconds == 0


def test_default_retry_policy() -> None:
    policy = only("  - route: [{destination: {host: reviews}}]\n").route.retry_policy
    assert policy.num_retries.value == 2
    assert policy.retry_on == (
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes")
    assert list(policy.retriable_status_codes) == [503]
    assert policy.host_selection_retry_max_attempts == 5
    assert [p.name for p in policy.retry_host_predicate] == [
        "envoy.retry_host_predicates.previous_hosts"]


def test_retries_with_numeric_codes_per_try_timeout_and_localities() -> None:
    policy = only("""\
  - retries: {attempts: 4, perTryTimeout: 2s, retryOn: "gateway-error,503, 429",
              retryRemoteLocalities: true, backoff: 100ms}
    route: [{destination: {host: reviews}}]
""").route.retry_policy
    assert policy.num_retries.value == 4
    assert policy.retry_on == "gateway-error,retriable-status-codes"
    assert list(policy.retriable_status_codes) == [503, 429]
    assert policy.per_try_timeout.seconds == 2
    assert policy.retry_priority.name == "envoy.retry_priorities.previous_priorities"
    config = previous_priorities_config_pb2.PreviousPrioritiesConfig()
    policy.retry_priority.typed_config.Unpack(config)
    assert config.update_frequency == 2
    assert policy.retry_back_off.base_interval.nanos == 100_000_000


def test_retries_attempts_zero_disables_and_ignore_previous_hosts_false() -> None:
    found = routes("""\
  - match: [{uri: {prefix: /none}}]
    retries: {attempts: 0}
    route: [{destination: {host: reviews}}]
  - retries: {attempts: 1, retryIgnorePreviousHosts: false}
    route: [{destination: {host: reviews}}]
""")
    assert not found[0].route.HasField("retry_policy")
    assert found[1].route.retry_policy.num_retries.value == 1
    assert not found[1].route.retry_policy.retry_host_predicate


def test_mesh_default_retry_policy_replaces_istios() -> None:
    mesh = MeshSettings(default_http_retry_policy={"attempts": 5, "retryOn": "5xx"})
    policy = only("  - route: [{destination: {host: reviews}}]\n", mesh=mesh).route.retry_policy
    assert policy.num_retries.value == 5 and policy.retry_on == "5xx"


# -- fault, CORS, rewrite, redirect, direct response ---------------------------------------------


def test_fault_delay_and_abort() -> None:
    route = only("""\
  - fault:
      delay: {fixedDelay: 7s, percentage: {value: 12.5}}
      abort: {httpStatus: 503, percentage: {value: 0.1}}
    route: [{destination: {host: reviews}}]
""")
    fault = fault_pb2.HTTPFault()
    route.typed_per_filter_config["envoy.filters.http.fault"].Unpack(fault)
    assert fault.delay.fixed_delay.seconds == 7
    assert (fault.delay.percentage.numerator, fault.delay.percentage.denominator) == (
        125000, MILLION)
    assert fault.abort.http_status == 503
    assert (fault.abort.percentage.numerator, fault.abort.percentage.denominator) == (
        1000, MILLION)


def test_fault_grpc_abort_and_legacy_percent() -> None:
    route = only("""\
  - fault:
      delay: {fixedDelay: 1s, percent: 30}
      abort: {grpcStatus: UNAVAILABLE}
    route: [{destination: {host: reviews}}]
""")
    fault = fault_pb2.HTTPFault()
    route.typed_per_filter_config["envoy.filters.http.fault"].Unpack(fault)
    assert fault.abort.grpc_status == 14
    assert fault.delay.percentage.numerator == 30
    assert fault.delay.percentage.denominator == percent_pb2.FractionalPercent.HUNDRED


def test_cors_policy() -> None:
    route = only("""\
  - corsPolicy:
      allowOrigins: [{exact: "https://a.example.com"}, {regex: "https://.*\\\\.b\\\\.com"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-a, x-b]
      exposeHeaders: [x-c]
      maxAge: 24h
      allowCredentials: true
      unmatchedPreflights: IGNORE
    route: [{destination: {host: reviews}}]
""")
    cors = cors_pb2.CorsPolicy()
    route.typed_per_filter_config["envoy.filters.http.cors"].Unpack(cors)
    assert cors.allow_origin_string_match[0].exact == "https://a.example.com"
    assert cors.allow_origin_string_match[1].safe_regex.regex == r"https://.*\.b\.com"
    assert (cors.allow_methods, cors.allow_headers, cors.expose_headers) == (
        "GET,POST", "x-a,x-b", "x-c")
    assert cors.max_age == "86400"
    assert cors.allow_credentials.value is True
    assert cors.filter_enabled.default_value.numerator == 100
    assert cors.forward_not_matching_preflights.value is False


def test_rewrites() -> None:
    found = routes("""\
  - match: [{uri: {prefix: /v1}}]
    rewrite: {uri: /v2, authority: new.example.com}
    route: [{destination: {host: reviews}}]
  - rewrite: {uriRegexRewrite: {match: "^/old/(.*)$", rewrite: "/new/\\\\1"}}
    route: [{destination: {host: reviews}}]
""")
    assert found[0].route.prefix_rewrite == "/v2"
    assert found[0].route.host_rewrite_literal == "new.example.com"
    assert found[1].route.regex_rewrite.pattern.regex == "^/old/(.*)$"
    assert found[1].route.regex_rewrite.substitution == r"/new/\1"


def test_redirects() -> None:
    found = routes("""\
  - match: [{uri: {exact: /a}}]
    redirect: {uri: /b, authority: other.example.com, scheme: https, port: 8443,
               redirectCode: 308}
  - match: [{uri: {exact: /c}}]
    redirect: {uri: /d, derivePort: FROM_REQUEST_PORT}
  - match: [{uri: {exact: /e}}]
    redirect: {authority: x.example.com, port: 80}
  - redirect: {uri: /f, redirectCode: 302}
""")
    first = found[0].redirect
    assert (first.path_redirect, first.host_redirect, first.scheme_redirect) == (
        "/b", "other.example.com", "https")
    assert first.port_redirect == 8443
    assert first.response_code == rc.RedirectAction.PERMANENT_REDIRECT
    assert found[1].redirect.port_redirect == 9080  # the request's port = this route's port
    assert found[1].redirect.response_code == rc.RedirectAction.MOVED_PERMANENTLY
    assert found[2].redirect.port_redirect == 0  # :80 on http is implied
    assert found[3].redirect.response_code == rc.RedirectAction.FOUND
    assert found[3].decorator.operation == "reviews-vs:9080/*"


def test_direct_response_string_and_bytes() -> None:
    found = routes("""\
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: "I'm a teapot"}}
  - directResponse: {status: 200, body: {bytes: aGVsbG8=}}
""")
    assert found[0].direct_response.status == 418
    assert found[0].direct_response.body.inline_string == "I'm a teapot"
    assert found[1].direct_response.body.inline_bytes == b"hello"


def test_header_operations() -> None:
    route = only("""\
  - headers:
      request:
        set: {x-b: "2", x-a: "1", ":path": /nope, host: h.example.com}
        add: {x-c: "3"}
        remove: [x-d, ":authority"]
      response:
        set: {x-e: "5"}
        add: {x-f: "6"}
        remove: [x-g]
    route: [{destination: {host: reviews}}]
""")
    adds = [(h.header.key, h.header.value, h.append_action) for h in route.request_headers_to_add]
    overwrite = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    append = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
    assert adds == [("x-a", "1", overwrite), ("x-b", "2", overwrite), ("x-c", "3", append)]
    assert list(route.request_headers_to_remove) == ["x-d"]
    assert route.route.host_rewrite_literal == "h.example.com"
    assert [(h.header.key, h.append_action) for h in route.response_headers_to_add] == [
        ("x-e", overwrite), ("x-f", append)]
    assert list(route.response_headers_to_remove) == ["x-g"]


# -- mirrors, decorator, metadata, hash policy ------------------------------------------------


def test_mirror_and_mirrors_with_percentages() -> None:
    found = routes("""\
  - match: [{uri: {prefix: /m}}]
    mirror: {host: mirror.test.svc.cluster.local}
    mirrorPercentage: {value: 25.5}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /off}}]
    mirror: {host: mirror.test.svc.cluster.local}
    mirrorPercentage: {value: 0}
    route: [{destination: {host: reviews}}]
  - mirrors:
    - destination: {host: mirror.test.svc.cluster.local, subset: v2}
    - destination: {host: ratings, port: {number: 9081}}
      percentage: {value: 5}
    route: [{destination: {host: reviews}}]
""")
    first = found[0].route.request_mirror_policies
    assert [m.cluster for m in first] == ["outbound|8080||mirror.test.svc.cluster.local"]
    assert first[0].runtime_fraction.default_value.numerator == 255000
    assert first[0].trace_sampled.value is False
    assert not found[1].route.request_mirror_policies
    many = found[2].route.request_mirror_policies
    assert [m.cluster for m in many] == [
        "outbound|8080|v2|mirror.test.svc.cluster.local",
        "outbound|9081||ratings.default.svc.cluster.local",
    ]
    assert many[0].runtime_fraction.default_value.numerator == 100
    assert many[0].runtime_fraction.default_value.denominator == (
        percent_pb2.FractionalPercent.HUNDRED)
    assert many[1].runtime_fraction.default_value.numerator == 50000


def test_decorator_and_metadata() -> None:
    route = only("""\
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: reviews}}]
""")
    assert route.decorator.operation == f"{HOST}:9080/api*"
    config = route.metadata.filter_metadata["istio"].fields["config"].string_value
    assert config == "/apis/networking.istio.io/v1/namespaces/default/virtual-service/reviews-vs"


DR_HASH = """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
  subsets:
  - name: sticky
    labels: {version: v2}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpCookie: {name: session, path: /, ttl: 60s}}
  - name: ip
    labels: {version: v3}
    trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}
  - name: query
    labels: {version: v4}
    trafficPolicy: {loadBalancer: {consistentHash: {httpQueryParameterName: user}}}
"""


def test_consistent_hash_from_destination_rule_goes_on_the_route() -> None:
    found = routes("""\
  - match: [{uri: {prefix: /h}}]
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /c}}]
    route: [{destination: {host: reviews, subset: sticky}}]
  - match: [{uri: {prefix: /i}}]
    route: [{destination: {host: reviews, subset: ip}}]
  - route: [{destination: {host: reviews, subset: query}}]
""", extra=DR_HASH)
    header, cookie, source, query = (r.route.hash_policy[0] for r in found)
    assert header.header.header_name == "x-user"
    assert (cookie.cookie.name, cookie.cookie.path, cookie.cookie.ttl.seconds) == (
        "session", "/", 60)
    assert source.connection_properties.source_ip
    assert query.query_parameter.name == "user"
    # Retries stay on the hashed host.
    assert not found[0].route.retry_policy.retry_host_predicate


def test_weighted_destinations_share_one_hash_policy() -> None:
    route = only("""\
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v2}, weight: 50}
""", extra=DR_HASH)
    assert [p.header.header_name for p in route.route.hash_policy] == ["x-user"]


def test_consistent_hash_on_default_route_without_virtual_service() -> None:
    objects, _ = load_text(SERVICES + DR_HASH, "dr.yaml")
    push = push_context.build(objects, MeshSettings(), "v1")
    config = next(c for c in generate(types.ROUTE, push, SIDECAR, {}) if c.name == "9080")
    vhost = next(v for v in config.virtual_hosts if v.name == f"{HOST}:9080")
    (route,) = vhost.routes
    assert route.name == "default"
    assert route.route.hash_policy[0].header.header_name == "x-user"


# -- delegation ----------------------------------------------------------------------------------


def test_delegate_routes_are_inlined_under_the_root_match() -> None:
    delegate = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-delegate, namespace: test}
spec:
  http:
  - name: v2
    match: [{uri: {prefix: /reviews/v2}, headers: {x-beta: {exact: "1"}}}]
    route: [{destination: {host: mirror}}]
  - match: [{uri: {prefix: /elsewhere}}]
    route: [{destination: {host: mirror}}]
  - route: [{destination: {host: mirror}}]
"""
    found = routes("""\
  - name: root
    match: [{uri: {prefix: /reviews}}]
    timeout: 3s
    delegate: {name: reviews-delegate, namespace: test}
  - route: [{destination: {host: reviews}}]
""", extra=delegate)
    assert [r.name for r in found] == ["root-v2", "root", ""]
    first, second, last = found
    assert first.match.prefix == "/reviews/v2"
    assert [h.name for h in first.match.headers] == ["x-beta"]
    # Short hosts resolve in the delegate's namespace; settings it lacks come from the root.
    assert first.route.cluster == "outbound|8080||mirror.test.svc.cluster.local"
    assert first.route.timeout.seconds == 3
    assert second.match.prefix == "/reviews"  # no match of its own: narrowed by the root's
    assert last.route.cluster == f"outbound|9080||{HOST}"


def test_missing_delegate_drops_only_that_rule() -> None:
    found = routes("""\
  - match: [{uri: {prefix: /gone}}]
    delegate: {name: nothing-here}
  - route: [{destination: {host: reviews}}]
""")
    assert [r.match.prefix for r in found] == ["/"]
