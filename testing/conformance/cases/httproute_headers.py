"""HTTPRoute header filter tests through a Gateway (``tests/httproute-cors.go``,
``tests/httproute-*header-modifier*.go``)."""

from __future__ import annotations

import attrs

from ..model import (
    INFRA_NS,
    BackendNamedByHeader,
    Case,
    ExpectedRequest,
    ExpectedResponse,
    Request,
    Response,
)
from .checks import accepted, resolved, single_route_case, step

NS = INFRA_NS
SAME_NAMESPACE = (NS, "same-namespace")
V1 = "infra-backend-v1"


def _route(name: str) -> tuple[str, str]:
    return (NS, name)


_CORS_REQUESTS = (
    ExpectedResponse(
        test_case_name="CORS preflight request from an exact matching origin should be allowed",
        request=Request(
            path="/cors-1",
            method="OPTIONS",
            headers={
                "Origin": "https://www.foo.com",
                "access-control-request-method": "GET",
                "access-control-request-headers": "x-header-1, x-header-2",
            },
        ),
        expected_request=ExpectedRequest(request=Request(method="OPTIONS")),
        response=Response(
            status_codes=(200, 204),
            valid_header_values={
                "access-control-allow-origin": ("https://www.foo.com",),
                "access-control-allow-methods": ("GET, OPTIONS", "OPTIONS, GET"),
                "access-control-allow-headers": (
                    "x-header-1, x-header-2",
                    "x-header-2, x-header-1",
                ),
                "access-control-expose-headers": (
                    "x-header-3, x-header-4",
                    "x-header-4, x-header-3",
                ),
                "access-control-max-age": ("3600",),
                "access-control-allow-credentials": ("true",),
            },
            ignore_whitespace=True,
        ),
    ),
    ExpectedResponse(
        test_case_name="CORS preflight request from a wildcard matching origin should be allowed",
        request=Request(
            path="/cors-1",
            method="OPTIONS",
            headers={
                "Origin": "https://www.bar.com",
                "access-control-request-method": "GET",
                "access-control-request-headers": "x-header-1, x-header-2",
            },
        ),
        expected_request=ExpectedRequest(request=Request(method="OPTIONS")),
        response=Response(
            status_codes=(200, 204),
            valid_header_values={
                "access-control-allow-origin": ("https://www.bar.com",),
                "access-control-allow-methods": ("GET, OPTIONS", "OPTIONS, GET"),
                "access-control-allow-headers": (
                    "x-header-1, x-header-2",
                    "x-header-2, x-header-1",
                ),
                "access-control-expose-headers": (
                    "x-header-3, x-header-4",
                    "x-header-4, x-header-3",
                ),
                "access-control-max-age": ("3600",),
                "access-control-allow-credentials": ("true",),
            },
            ignore_whitespace=True,
        ),
    ),
    ExpectedResponse(
        test_case_name=(
            "CORS preflight request from a wildcard matching any number of periods left to '*' "
            "should be allowed"
        ),
        request=Request(
            path="/cors-1",
            method="OPTIONS",
            headers={
                "Origin": "https://xpto.www.bar.com",
                "access-control-request-method": "GET",
                "access-control-request-headers": "x-header-1, x-header-2",
            },
        ),
        expected_request=ExpectedRequest(request=Request(method="OPTIONS")),
        response=Response(
            status_codes=(200, 204),
            valid_header_values={
                "access-control-allow-origin": ("https://xpto.www.bar.com",),
                "access-control-allow-methods": ("GET, OPTIONS", "OPTIONS, GET"),
                "access-control-allow-headers": (
                    "x-header-1, x-header-2",
                    "x-header-2, x-header-1",
                ),
                "access-control-expose-headers": (
                    "x-header-3, x-header-4",
                    "x-header-4, x-header-3",
                ),
                "access-control-max-age": ("3600",),
                "access-control-allow-credentials": ("true",),
            },
            ignore_whitespace=True,
        ),
    ),
    ExpectedResponse(
        test_case_name="CORS preflight request from a non-matching origin should not be allowed",
        request=Request(
            path="/cors-1",
            method="OPTIONS",
            headers={"Origin": "https://foobar.com", "access-control-request-method": "GET"},
        ),
        expected_request=ExpectedRequest(request=Request(method="OPTIONS")),
        response=Response(
            status_codes=(200, 204, 403),
            absent_headers=("access-control-allow-origin",),
        ),
    ),
    ExpectedResponse(
        test_case_name="Simple request from an exact matching origin should be allowed",
        namespace=NS,
        request=Request(
            path="/cors-1",
            method="GET",
            headers={
                "Origin": "https://www.foo.com",
                "access-control-request-method": "GET",
                "access-control-request-headers": "x-header-1, x-header-2",
            },
        ),
        response=Response(
            status_code=200,
            headers={"access-control-allow-origin": "https://www.foo.com"},
        ),
    ),
    ExpectedResponse(
        test_case_name="Simple request from a wildcard matching origin should be allowed",
        namespace=NS,
        request=Request(
            path="/cors-1",
            method="GET",
            headers={
                "Origin": "https://www.bar.com",
                "access-control-request-method": "GET",
                "access-control-request-headers": "x-header-1, x-header-2",
            },
        ),
        response=Response(
            status_code=200,
            headers={"access-control-allow-origin": "https://www.bar.com"},
        ),
    ),
    ExpectedResponse(
        test_case_name="Simple request from a non-matching origin should not be allowed",
        namespace=NS,
        request=Request(
            path="/cors-1",
            method="GET",
            headers={"Origin": "https://foobar.com", "access-control-request-method": "GET"},
        ),
        response=Response(absent_headers=("access-control-allow-origin",)),
    ),
    ExpectedResponse(
        test_case_name=(
            "CORS preflight request with POST method should be allowed by allowMethods with "
            "wildcard"
        ),
        request=Request(
            path="/cors-2",
            method="OPTIONS",
            headers={"Origin": "https://www.foo.com", "access-control-request-method": "POST"},
        ),
        expected_request=ExpectedRequest(request=Request(method="OPTIONS")),
        response=Response(
            status_codes=(200, 204),
            valid_header_values={"access-control-allow-methods": ("POST", "*")},
            headers={"access-control-allow-origin": "https://www.foo.com"},
            absent_headers=("access-control-allow-credentials",),
        ),
    ),
    ExpectedResponse(
        test_case_name=(
            "CORS preflight request should not receive access-control-allow-credentials header "
            "without access-control-allow-credentials set to true"
        ),
        request=Request(
            path="/cors-2",
            method="OPTIONS",
            headers={"Origin": "https://www.foo.com", "access-control-request-method": "POST"},
        ),
        expected_request=ExpectedRequest(request=Request(method="OPTIONS")),
        response=Response(
            status_codes=(200, 204),
            absent_headers=("Access-Control-Allow-Credentials",),
        ),
    ),
    ExpectedResponse(
        test_case_name=(
            "CORS preflight request from a wildcard origin should return header with '*' or with "
            "the requested Origin"
        ),
        request=Request(
            path="/cors-wildcard-origin",
            method="OPTIONS",
            headers={"Origin": "https://foobar.com", "access-control-request-method": "PUT"},
        ),
        expected_request=ExpectedRequest(request=Request(method="OPTIONS")),
        response=Response(
            status_codes=(200, 204),
            valid_header_values={
                "access-control-allow-origin": ("https://foobar.com", "*"),
                "access-control-allow-methods": ("PUT",),
            },
            absent_headers=("Access-Control-Allow-Credentials",),
        ),
    ),
    ExpectedResponse(
        test_case_name=(
            "CORS preflight request from a wildcard origin containing a port should return "
            "header with '*' or with the requested Origin"
        ),
        request=Request(
            path="/cors-wildcard-origin",
            method="OPTIONS",
            headers={
                "Origin": "https://foobar.com:12345",
                "access-control-request-method": "PUT",
            },
        ),
        expected_request=ExpectedRequest(request=Request(method="OPTIONS")),
        response=Response(
            status_codes=(200, 204),
            valid_header_values={
                "access-control-allow-origin": ("https://foobar.com:12345", "*"),
                "access-control-allow-methods": ("PUT",),
            },
            absent_headers=("Access-Control-Allow-Credentials",),
        ),
    ),
    ExpectedResponse(
        test_case_name=(
            "Request from a wildcard origin containing a port should return header with '*' or "
            "with the requested Origin"
        ),
        namespace=NS,
        request=Request(
            path="/cors-wildcard-origin",
            method="PUT",
            headers={"Origin": "https://foobar.com:12345"},
        ),
        response=Response(
            status_code=200,
            valid_header_values={
                "access-control-allow-origin": ("https://foobar.com:12345", "*"),
            },
        ),
    ),
    ExpectedResponse(
        test_case_name=(
            "Simple request from a wildcard origin should return header with '*' or with the "
            "requested Origin"
        ),
        namespace=NS,
        request=Request(
            path="/cors-wildcard-origin",
            method="PUT",
            headers={"Origin": "https://foobar.com"},
        ),
        response=Response(
            status_code=200,
            valid_header_values={"access-control-allow-origin": ("https://foobar.com", "*")},
            absent_headers=("Access-Control-Allow-Credentials",),
        ),
    ),
    ExpectedResponse(
        test_case_name=(
            "CORS preflight request requesting specific method and headers should be allowed and "
            "always echo the origin with allowCredentials set to true"
        ),
        request=Request(
            path="/cors-wildcard-methods-headers",
            method="OPTIONS",
            headers={
                "Origin": "https://other.foo.com",
                "access-control-request-method": "PUT",
                "access-control-request-headers": "x-header-1, x-header-2",
            },
        ),
        expected_request=ExpectedRequest(request=Request(method="OPTIONS")),
        response=Response(
            status_codes=(200, 204),
            valid_header_values={
                "access-control-allow-origin": ("https://other.foo.com",),
                "access-control-allow-methods": ("PUT",),
                "access-control-allow-headers": (
                    "x-header-1, x-header-2",
                    "x-header-2, x-header-1",
                ),
                "access-control-allow-credentials": ("true",),
            },
            ignore_whitespace=True,
        ),
    ),
    ExpectedResponse(
        test_case_name=(
            "CORS preflight request requesting specific method and headers should hide "
            "access-control-allow-credentials headers with allowCredentials set to false"
        ),
        request=Request(
            path="/cors-wildcard-methods-headers-unauth",
            method="OPTIONS",
            headers={
                "Origin": "https://other.foo.com",
                "access-control-request-method": "PUT",
                "access-control-request-headers": "x-header-1, x-header-2",
            },
        ),
        expected_request=ExpectedRequest(request=Request(method="OPTIONS")),
        response=Response(
            status_codes=(200, 204),
            valid_header_values={
                "access-control-allow-origin": ("https://other.foo.com", "*"),
                "access-control-allow-methods": ("PUT", "*"),
                "access-control-allow-headers": (
                    "x-header-1, x-header-2",
                    "x-header-2, x-header-1",
                    "*",
                ),
            },
            absent_headers=("access-control-allow-credentials",),
            ignore_whitespace=True,
        ),
    ),
    ExpectedResponse(
        test_case_name=(
            "CORS request should receive access-control-allow-credentials header with "
            "allowCredentials set to true"
        ),
        request=Request(
            path="/cors-wildcard-methods-headers",
            method="GET",
            headers={"Origin": "https://other.foo.com"},
        ),
        namespace=NS,
        response=Response(
            status_code=200,
            valid_header_values={
                "access-control-allow-origin": ("https://other.foo.com",),
                "access-control-allow-credentials": ("true",),
            },
        ),
    ),
    ExpectedResponse(
        test_case_name=(
            "CORS request should not receive access-control-allow-credentials header without "
            "allowCredentials set to true"
        ),
        request=Request(
            path="/cors-wildcard-methods-headers-unauth",
            method="GET",
            headers={"Origin": "https://other.foo.com"},
        ),
        namespace=NS,
        response=Response(
            status_code=200,
            valid_header_values={
                "access-control-allow-origin": ("https://other.foo.com", "*"),
            },
            absent_headers=("access-control-allow-credentials",),
        ),
    ),
)

_CORS_ROUTES = tuple(_route(name) for name in (
    "cors-multiple-origins-methods-headers", "cors-wildcard-methods", "cors-wildcard-origin",
    "cors-wildcard-methods-headers"))

CORS = Case(
    short_name="HTTPRouteCORS",
    description="An HTTPRoute with CORS filter should allow CORS requests from specified origins",
    features=("Gateway", "HTTPRoute", "HTTPRouteCORS"),
    manifests=("tests/httproute-cors.yaml",),
    source="httproute-cors.go",
    steps=(
        # Go waits for the first two routes to be accepted and for all four to resolve.
        step(accepted("HTTPRoute", SAME_NAMESPACE, *_CORS_ROUTES[:2]),
             *(resolved("HTTPRoute", route, SAME_NAMESPACE) for route in _CORS_ROUTES),
             gateway=SAME_NAMESPACE, requests=_CORS_REQUESTS),
    ),
)

_BACKEND_WEIGHTS_ROUTE = _route("request-header-modifier-backend-weights")

REQUEST_HEADER_MODIFIER_BACKEND_WEIGHTS = Case(
    short_name="HTTPRouteRequestHeaderModifierBackendWeights",
    description="An HTTPRoute with backend request header modifier filter sends traffic to the "
    "correct backends",
    features=("Gateway", "HTTPRouteBackendRequestHeaderModification", "HTTPRoute"),
    manifests=("tests/httproute-request-header-modifier-backend-weights.yaml",),
    source="httproute-request-header-modifier-backend-weights.go",
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, _BACKEND_WEIGHTS_ROUTE),
             resolved("HTTPRoute", _BACKEND_WEIGHTS_ROUTE, SAME_NAMESPACE),
             gateway=SAME_NAMESPACE, requests=(
                 ExpectedResponse(request=Request(path="/"), response=Response(status_code=200),
                                  namespace=NS),
                 # each backendRef's filter sets "Backend" to its own Service's name
                 BackendNamedByHeader(Request(path="/"), "Backend", 100),
             )),
    ),
)

_HEADER_MODIFIER_REQUESTS = (
    ExpectedResponse(
        request=Request(path="/set", headers={"Some-Other-Header": "val"}),
        expected_request=ExpectedRequest(
            request=Request(
                path="/set",
                headers={"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"},
            ),
        ),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(
            path="/set",
            headers={"Some-Other-Header": "val", "X-Header-Set": "some-other-value"},
        ),
        expected_request=ExpectedRequest(
            request=Request(
                path="/set",
                headers={"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"},
            ),
        ),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/add", headers={"Some-Other-Header": "val"}),
        expected_request=ExpectedRequest(
            request=Request(
                path="/add",
                headers={"Some-Other-Header": "val", "X-Header-Add": "add-appends-values"},
            ),
        ),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(
            path="/add",
            headers={"Some-Other-Header": "val", "X-Header-Add": "some-other-value"},
        ),
        expected_request=ExpectedRequest(
            request=Request(
                path="/add",
                headers={
                    "Some-Other-Header": "val",
                    "X-Header-Add": "some-other-value,add-appends-values",
                },
            ),
        ),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/remove", headers={"X-Header-Remove": "val"}),
        expected_request=ExpectedRequest(
            request=Request(path="/remove"),
            absent_headers=("X-Header-Remove",),
        ),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(
            path="/multiple",
            headers={
                "X-Header-Set-2": "set-val-2",
                "X-Header-Add-2": "add-val-2",
                "X-Header-Remove-2": "remove-val-2",
                "Another-Header": "another-header-val",
            },
        ),
        expected_request=ExpectedRequest(
            request=Request(
                path="/multiple",
                headers={
                    "X-Header-Set-1": "header-set-1",
                    "X-Header-Set-2": "header-set-2",
                    "X-Header-Add-1": "header-add-1",
                    "X-Header-Add-2": "add-val-2,header-add-2",
                    "X-Header-Add-3": "header-add-3",
                    "Another-Header": "another-header-val",
                },
            ),
            absent_headers=("X-Header-Remove-1", "X-Header-Remove-2"),
        ),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(
            path="/case-insensitivity",
            headers={
                "x-header-set": "original-val-set",
                "x-header-add": "original-val-add",
                "x-header-remove": "original-val-remove",
                "Another-Header": "another-header-val",
            },
        ),
        expected_request=ExpectedRequest(
            request=Request(
                path="/case-insensitivity",
                headers={
                    "X-Header-Set": "header-set",
                    "X-Header-Add": "original-val-add,header-add",
                    "Another-Header": "another-header-val",
                },
            ),
            absent_headers=("x-header-remove", "X-Header-Remove"),
        ),
        backend=V1,
        namespace=NS,
    ),
)

# Both tests run the same Go function on their own manifest.
REQUEST_HEADER_MODIFIER = single_route_case(
    "HTTPRouteRequestHeaderModifier",
    "An HTTPRoute has request header modifier filters applied correctly",
    ("Gateway", "HTTPRoute"),
    "httproute-request-header-modifier", "request-header-modifier", _HEADER_MODIFIER_REQUESTS)

BACKEND_REQUEST_HEADER_MODIFIER = attrs.evolve(
    REQUEST_HEADER_MODIFIER,
    short_name="HTTPRouteBackendRequestHeaderModifier",
    description="An HTTPRoute backend has request header modifier filters applied correctly",
    features=("Gateway", "HTTPRoute", "HTTPRouteBackendRequestHeaderModification"),
    manifests=("tests/httproute-request-header-modifier-backend.yaml",))

RESPONSE_HEADER_MODIFIER = single_route_case(
    "HTTPRouteResponseHeaderModifier",
    "An HTTPRoute has response header modifier filters applied correctly",
    ("Gateway", "HTTPRoute", "HTTPRouteResponseHeaderModification"),
    "httproute-response-header-modifier", "response-header-modifier",
    (
        ExpectedResponse(
            request=Request(path="/set"),
            backend_set_response_headers={"Some-Other-Header": "val"},
            response=Response(
                headers={"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"},
            ),
            backend=V1,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/set"),
            backend_set_response_headers={
                "Some-Other-Header": "val",
                "X-Header-Set": "some-other-value",
            },
            response=Response(
                headers={"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"},
            ),
            backend=V1,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/add"),
            backend_set_response_headers={"Some-Other-Header": "val"},
            response=Response(
                headers={"Some-Other-Header": "val", "X-Header-Add": "add-appends-values"},
            ),
            backend=V1,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/add"),
            backend_set_response_headers={
                "Some-Other-Header": "val",
                "X-Header-Add": "some-other-value",
            },
            response=Response(
                headers={
                    "Some-Other-Header": "val",
                    "X-Header-Add": "some-other-value,add-appends-values",
                },
            ),
            backend=V1,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/remove"),
            backend_set_response_headers={"X-Header-Remove": "val"},
            response=Response(absent_headers=("X-Header-Remove",)),
            backend=V1,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/multiple"),
            backend_set_response_headers={
                "X-Header-Set-2": "set-val-2",
                "X-Header-Add-2": "add-val-2",
                "X-Header-Remove-2": "remove-val-2",
                "Another-Header": "another-header-val",
                "X-Header-Remove-1": "val",
            },
            response=Response(
                headers={
                    "X-Header-Set-1": "header-set-1",
                    "X-Header-Set-2": "header-set-2",
                    "X-Header-Add-1": "header-add-1",
                    "X-Header-Add-2": "add-val-2,header-add-2",
                    "X-Header-Add-3": "header-add-3",
                    "Another-Header": "another-header-val",
                },
                absent_headers=("X-Header-Remove-1", "X-Header-Remove-2"),
            ),
            backend=V1,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/case-insensitivity"),
            backend_set_response_headers={
                "x-header-set": "original-val-set",
                "x-header-add": "original-val-add",
                "x-header-remove": "original-val-remove",
                "Another-Header": "another-header-val",
            },
            response=Response(
                headers={
                    "X-Header-Set": "header-set",
                    "X-Header-Add": "original-val-add,header-add",
                    "X-Lowercase-Add": "lowercase-add",
                    "X-Mixedcase-Add-1": "mixedcase-add-1",
                    "X-Mixedcase-Add-2": "mixedcase-add-2",
                    "X-Uppercase-Add": "uppercase-add",
                    "Another-Header": "another-header-val",
                },
                absent_headers=("x-header-remove", "X-Header-Remove"),
            ),
            backend=V1,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(
                path="/response-and-request-header-modifiers",
                headers={
                    "X-Header-Remove": "remove-val",
                    "X-Header-Add-Append": "append-val-1",
                    "X-Header-Echo": "echo",
                },
            ),
            backend_set_response_headers={
                "X-Header-Set-2": "set-val-2",
                "X-Header-Add-2": "add-val-2",
                "X-Header-Remove-2": "remove-val-2",
                "Another-Header": "another-header-val",
                "X-Header-Remove-1": "remove-val-1",
                "X-Header-Echo": "echo",
            },
            expected_request=ExpectedRequest(
                request=Request(
                    path="/response-and-request-header-modifiers",
                    headers={
                        "X-Header-Add": "header-val-1",
                        "X-Header-Set": "set-overwrites-values",
                        "X-Header-Add-Append": "append-val-1,header-val-2",
                        "X-Header-Echo": "echo",
                    },
                ),
                absent_headers=("X-Header-Remove",),
            ),
            response=Response(
                headers={
                    "X-Header-Set-1": "header-set-1",
                    "X-Header-Set-2": "header-set-2",
                    "X-Header-Add-1": "header-add-1",
                    "X-Header-Add-2": "add-val-2,header-add-2",
                    "Another-Header": "another-header-val",
                    "X-Header-Echo": "echo",
                },
                absent_headers=("X-Header-Remove-1", "X-Header-Remove-2"),
            ),
            backend=V1,
            namespace=NS,
        ),
    ))

CASES: tuple[Case, ...] = (
    CORS,
    REQUEST_HEADER_MODIFIER_BACKEND_WEIGHTS,
    REQUEST_HEADER_MODIFIER,
    BACKEND_REQUEST_HEADER_MODIFIER,
    RESPONSE_HEADER_MODIFIER,
)
