"""HTTPRoute tests of request matching through a Gateway (``tests/httproute-*.go``: paths,
headers, methods, query parameters, match order, named rules)."""

from __future__ import annotations

from ..model import (
    INFRA_NS,
    Case,
    ExpectedResponse,
    Request,
    Response,
)
from .checks import accepted, resolved, step

NS = INFRA_NS
SAME_NAMESPACE = (NS, "same-namespace")
V1 = "infra-backend-v1"
V2 = "infra-backend-v2"
V3 = "infra-backend-v3"


def _route(name: str) -> tuple[str, str]:
    return (NS, name)


_EXACT_PATH_MATCHING_REQUESTS = (
    ExpectedResponse(request=Request(path="/one"), backend=V1, namespace=NS),
    ExpectedResponse(request=Request(path="/two"), backend=V2, namespace=NS),
    ExpectedResponse(request=Request(path="/"), response=Response(status_code=404)),
    ExpectedResponse(request=Request(path="/one/example"), response=Response(status_code=404)),
    ExpectedResponse(request=Request(path="/two/"), response=Response(status_code=404)),
    ExpectedResponse(request=Request(path="/Two"), response=Response(status_code=404)),
)

EXACT_PATH_MATCHING = Case(
    short_name="HTTPRouteExactPathMatching",
    description="A single HTTPRoute with exact path matching for different backends",
    features=("Gateway", "HTTPRoute"),
    manifests=("tests/httproute-exact-path-matching.yaml",),
    source="httproute-exact-path-matching.go",
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, _route("exact-matching")),
             resolved("HTTPRoute", _route("exact-matching"), SAME_NAMESPACE),
             gateway=SAME_NAMESPACE,
             requests=_EXACT_PATH_MATCHING_REQUESTS),
    ),
)

_HEADER_MATCHING_REQUESTS = (
    ExpectedResponse(
        request=Request(path="/", headers={"Version": "one"}),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/", headers={"Version": "two"}),
        backend=V2,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/", headers={"Version": "two", "Color": "orange"}),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/", headers={"Version": "two", "Color": "blue"}),
        backend=V2,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/", headers={"Color": "orange"}),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(path="/", headers={"Some-Other-Header": "one"}),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(path="/", headers={"Color": "blue"}),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/", headers={"Color": "green"}),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/", headers={"Color": "red"}),
        backend=V2,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/", headers={"Color": "yellow"}),
        backend=V2,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/", headers={"Color": "purple"}),
        response=Response(status_code=404),
    ),
)

HEADER_MATCHING = Case(
    short_name="HTTPRouteHeaderMatching",
    description="A single HTTPRoute with header matching for different backends",
    features=("Gateway", "HTTPRoute"),
    manifests=("tests/httproute-header-matching.yaml",),
    source="httproute-header-matching.go",
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, _route("header-matching")),
             resolved("HTTPRoute", _route("header-matching"), SAME_NAMESPACE),
             gateway=SAME_NAMESPACE,
             requests=_HEADER_MATCHING_REQUESTS),
    ),
)

_MATCHING_ACROSS_ROUTES_REQUESTS = (
    ExpectedResponse(request=Request(host="example.com", path="/"), backend=V1, namespace=NS),
    ExpectedResponse(
        request=Request(host="example.com", path="/example"),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(host="example.net", path="/example"),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(host="example.com", path="/example", headers={"Version": "one"}),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(request=Request(host="example.com", path="/v2"), backend=V2, namespace=NS),
    ExpectedResponse(request=Request(host="example.net", path="/v2"), backend=V1, namespace=NS),
    ExpectedResponse(
        request=Request(host="example.com", path="/v2/example"),
        backend=V2,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(host="example.com", path="/", headers={"Version": "two"}),
        backend=V2,
        namespace=NS,
    ),
)

MATCHING_ACROSS_ROUTES = Case(
    short_name="HTTPRouteMatchingAcrossRoutes",
    description="Two HTTPRoutes with path matching for different backends",
    features=("Gateway", "HTTPRoute"),
    manifests=("tests/httproute-matching-across-routes.yaml",),
    source="httproute-matching-across-routes.go",
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, _route("matching-part1"),
                      _route("matching-part2")),
             resolved("HTTPRoute", _route("matching-part1"), SAME_NAMESPACE),
             resolved("HTTPRoute", _route("matching-part2"), SAME_NAMESPACE),
             gateway=SAME_NAMESPACE,
             requests=_MATCHING_ACROSS_ROUTES_REQUESTS),
    ),
)

_MATCHING_REQUESTS = (
    ExpectedResponse(request=Request(path="/"), backend=V1, namespace=NS),
    ExpectedResponse(request=Request(path="/example"), backend=V1, namespace=NS),
    ExpectedResponse(
        request=Request(path="/", headers={"Version": "one"}),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(request=Request(path="/v2"), backend=V2, namespace=NS),
    ExpectedResponse(request=Request(path="/v2/example"), backend=V2, namespace=NS),
    ExpectedResponse(
        request=Request(path="/", headers={"Version": "two"}),
        backend=V2,
        namespace=NS,
    ),
    ExpectedResponse(request=Request(path="/v2/"), backend=V2, namespace=NS),
    ExpectedResponse(request=Request(path="/v2example"), backend=V1, namespace=NS),
    ExpectedResponse(request=Request(path="/foo/v2/example"), backend=V1, namespace=NS),
)

MATCHING = Case(
    short_name="HTTPRouteMatching",
    description="A single HTTPRoute with path and header matching for different backends",
    features=("Gateway", "HTTPRoute"),
    manifests=("tests/httproute-matching.yaml",),
    source="httproute-matching.go",
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, _route("matching")),
             resolved("HTTPRoute", _route("matching"), SAME_NAMESPACE),
             gateway=SAME_NAMESPACE,
             requests=_MATCHING_REQUESTS),
    ),
)

# method matching alone, then with other match types
_METHOD_MATCHING_REQUESTS = (
    *(
        ExpectedResponse(request=Request(method="POST", path="/"), backend=V1, namespace=NS),
        ExpectedResponse(request=Request(method="GET", path="/"), backend=V2, namespace=NS),
        ExpectedResponse(
            request=Request(method="HEAD", path="/"),
            response=Response(status_code=404),
        ),
    ),
    *(
        ExpectedResponse(request=Request(path="/path1", method="GET"), backend=V1, namespace=NS),
        ExpectedResponse(
            request=Request(headers={"version": "one"}, path="/", method="PUT"),
            backend=V2,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(headers={"version": "two"}, path="/path2", method="POST"),
            backend=V3,
            namespace=NS,
        ),
    ),
    *(
        ExpectedResponse(
            request=Request(path="/path3", method="PATCH"),
            backend=V1,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(headers={"version": "three"}, path="/path4", method="DELETE"),
            backend=V1,
            namespace=NS,
        ),
    ),
    *(
        ExpectedResponse(
            request=Request(path="/", method="PUT"),
            response=Response(status_code=404),
        ),
        ExpectedResponse(
            request=Request(path="/path4", method="DELETE"),
            response=Response(status_code=404),
        ),
    ),
    *(
        ExpectedResponse(
            request=Request(path="/path5", method="PATCH"),
            backend=V1,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(headers={"version": "four"}, path="/", method="PATCH"),
            backend=V2,
            namespace=NS,
        ),
    ),
)

METHOD_MATCHING = Case(
    short_name="HTTPRouteMethodMatching",
    description="A single HTTPRoute with method matching for different backends",
    features=("Gateway", "HTTPRoute", "HTTPRouteMethodMatching"),
    manifests=("tests/httproute-method-matching.yaml",),
    source="httproute-method-matching.go",
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, _route("method-matching")),
             resolved("HTTPRoute", _route("method-matching"), SAME_NAMESPACE),
             gateway=SAME_NAMESPACE,
             requests=_METHOD_MATCHING_REQUESTS),
    ),
)

_NAMED_RULE_REQUESTS = (
    ExpectedResponse(
        request=Request(path="/named"),
        response=Response(status_code=200),
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/unnamed"),
        response=Response(status_code=200),
        namespace=NS,
    ),
)

NAMED_RULE = Case(
    short_name="HTTPRouteNamedRule",
    description="An HTTPRoute with a named HTTPRouteRule",
    features=("Gateway", "HTTPRoute", "HTTPRouteNamedRouteRule"),
    manifests=("tests/httproute-named-rule.yaml",),
    source="httproute-named-rule.go",
    provisional=True,
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, _route("http-named-rules")),
             resolved("HTTPRoute", _route("http-named-rules"), SAME_NAMESPACE),
             gateway=SAME_NAMESPACE,
             requests=_NAMED_RULE_REQUESTS),
    ),
)

_PATH_MATCH_ORDER_REQUESTS = (
    ExpectedResponse(request=Request(path="/match/exact/one"), backend=V3, namespace=NS),
    ExpectedResponse(request=Request(path="/match/exact"), backend=V2, namespace=NS),
    ExpectedResponse(request=Request(path="/match"), backend=V1, namespace=NS),
    ExpectedResponse(request=Request(path="/match/prefix/one/any"), backend=V2, namespace=NS),
    ExpectedResponse(request=Request(path="/match/prefix/any"), backend=V1, namespace=NS),
    ExpectedResponse(request=Request(path="/match/any"), backend=V3, namespace=NS),
)

PATH_MATCH_ORDER = Case(
    short_name="HTTPRoutePathMatchOrder",
    description="An HTTPRoute where there are multiple matches routing to any given backend "
    "follows match order precedence",
    features=("Gateway", "HTTPRoute"),
    manifests=("tests/httproute-path-match-order.yaml",),
    source="httproute-path-match-order.go",
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, _route("path-matching-order")),
             resolved("HTTPRoute", _route("path-matching-order"), SAME_NAMESPACE),
             gateway=SAME_NAMESPACE,
             requests=_PATH_MATCH_ORDER_REQUESTS),
    ),
)

# query param matching alone, then with other match types
_QUERY_PARAM_MATCHING_REQUESTS = (
    *(
        ExpectedResponse(request=Request(path="/?animal=whale"), backend=V1, namespace=NS),
        ExpectedResponse(request=Request(path="/?animal=dolphin"), backend=V2, namespace=NS),
        ExpectedResponse(
            request=Request(path="/?animal=dolphin&color=blue"),
            backend=V3,
            namespace=NS,
        ),
        ExpectedResponse(request=Request(path="/?ANIMAL=Whale"), backend=V3, namespace=NS),
        ExpectedResponse(
            request=Request(path="/?animal=whale&otherparam=irrelevant"),
            backend=V1,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/?animal=dolphin&color=yellow"),
            backend=V2,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/?color=blue"),
            response=Response(status_code=404),
        ),
        ExpectedResponse(
            request=Request(path="/?animal=dog"),
            response=Response(status_code=404),
        ),
        ExpectedResponse(
            request=Request(path="/?animal=whaledolphin"),
            response=Response(status_code=404),
        ),
        ExpectedResponse(request=Request(path="/"), response=Response(status_code=404)),
    ),
    *(
        ExpectedResponse(request=Request(path="/path1?animal=whale"), backend=V1, namespace=NS),
        ExpectedResponse(
            request=Request(headers={"version": "one"}, path="/?animal=whale"),
            backend=V2,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(headers={"version": "two"}, path="/path2?animal=whale"),
            backend=V3,
            namespace=NS,
        ),
    ),
    *(
        ExpectedResponse(request=Request(path="/path3?animal=shark"), backend=V1, namespace=NS),
        ExpectedResponse(
            request=Request(headers={"version": "three"}, path="/path4?animal=kraken"),
            backend=V1,
            namespace=NS,
        ),
    ),
    *(
        ExpectedResponse(
            request=Request(path="/?animal=shark"),
            response=Response(status_code=404),
        ),
        ExpectedResponse(
            request=Request(path="/path4?animal=kraken"),
            response=Response(status_code=404),
        ),
    ),
    *(
        ExpectedResponse(request=Request(path="/path5?animal=hydra"), backend=V1, namespace=NS),
        ExpectedResponse(
            request=Request(headers={"version": "four"}, path="/?animal=hydra"),
            backend=V3,
            namespace=NS,
        ),
    ),
)

QUERY_PARAM_MATCHING = Case(
    short_name="HTTPRouteQueryParamMatching",
    description="A single HTTPRoute with query param matching for different backends",
    features=("Gateway", "HTTPRoute", "HTTPRouteQueryParamMatching"),
    manifests=("tests/httproute-query-param-matching.yaml",),
    source="httproute-query-param-matching.go",
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, _route("query-param-matching")),
             resolved("HTTPRoute", _route("query-param-matching"), SAME_NAMESPACE),
             gateway=SAME_NAMESPACE,
             requests=_QUERY_PARAM_MATCHING_REQUESTS),
    ),
)


CASES: tuple[Case, ...] = (
    EXACT_PATH_MATCHING,
    HEADER_MATCHING,
    MATCHING_ACROSS_ROUTES,
    MATCHING,
    METHOD_MATCHING,
    NAMED_RULE,
    PATH_MATCH_ORDER,
    QUERY_PARAM_MATCHING,
)
