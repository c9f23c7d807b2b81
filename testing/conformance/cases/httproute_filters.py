"""HTTPRoute filter tests through a Gateway (``tests/httproute-*.go``: redirects, rewrites,
header modifiers, mirrors, CORS)."""

from __future__ import annotations

import attrs

from ..model import (
    INFRA_NS,
    BackendNamedByHeader,
    Case,
    ExpectedRequest,
    ExpectedResponse,
    MirroredBackend,
    RedirectRequest,
    Request,
    Response,
)
from .checks import accepted, resolved, step

NS = INFRA_NS
SAME_NAMESPACE = (NS, "same-namespace")
V1 = "infra-backend-v1"
V2 = "infra-backend-v2"
V3 = "infra-backend-v3"
# AddRequestIDQueryParam's parameter: it tells one mirrored request from another in the logs
REQUEST_ID = "gateway-api-conformance-request-id"


def _route(name: str) -> tuple[str, str]:
    return (NS, name)


def _filter_case(short_name: str, description: str, features: tuple[str, ...], name: str,
                 route: str, requests: tuple[ExpectedResponse, ...], *, provisional: bool = False,
                 check_resolved: bool = True) -> Case:
    """The common shape: one route on ``same-namespace``, accepted (and its references
    resolved), then the requests."""
    checks = [accepted("HTTPRoute", SAME_NAMESPACE, _route(route))]
    if check_resolved:
        checks.append(resolved("HTTPRoute", _route(route), SAME_NAMESPACE))
    return Case(
        short_name=short_name,
        description=description,
        features=features,
        manifests=(f"tests/{name}.yaml",),
        source=f"{name}.go",
        provisional=provisional,
        steps=(step(*checks, gateway=SAME_NAMESPACE, requests=requests),),
    )


REDIRECT_303 = _filter_case(
    "HTTPRoute303Redirect", "An HTTPRoute with a 303 redirect filter",
    ("Gateway", "HTTPRoute", "HTTPRoute303RedirectStatusCode"),
    "httproute-303-redirect", "303-redirect", (
        ExpectedResponse(
            request=Request(path="/see-other", unfollow_redirect=True, method="POST"),
            response=Response(status_code=303),
            redirect_request=RedirectRequest(path="/see-other"),
            namespace=NS,
        ),
    ),
    provisional=True)

REDIRECT_307 = _filter_case(
    "HTTPRoute307Redirect", "An HTTPRoute with a 307 path redirect filter",
    ("Gateway", "HTTPRoute", "HTTPRoute307RedirectStatusCode"),
    "httproute-307-redirect", "307-redirect", (
        ExpectedResponse(
            request=Request(path="/temporary", unfollow_redirect=True),
            response=Response(status_code=307),
            redirect_request=RedirectRequest(path="/temporary"),
            namespace=NS,
        ),
    ),
    provisional=True)

REDIRECT_308 = _filter_case(
    "HTTPRoute308Redirect", "An HTTPRoute with a 308 path redirect filter",
    ("Gateway", "HTTPRoute", "HTTPRoute308RedirectStatusCode"),
    "httproute-308-redirect", "308-redirect", (
        ExpectedResponse(
            request=Request(path="/permanent", unfollow_redirect=True),
            response=Response(status_code=308),
            redirect_request=RedirectRequest(path="/permanent"),
            namespace=NS,
        ),
    ),
    provisional=True)

BACKEND_REQUEST_REDIRECT = _filter_case(
    "HTTPRouteBackendRequestRedirect",
    "An HTTPRoute with RequestRedirect filter applied at the BackendRef level",
    ("Gateway", "HTTPRoute", "HTTPRouteBackendRequestRedirect"),
    "httproute-backend-request-redirect", "backend-request-redirect",
    (
        ExpectedResponse(
            request=Request(path="/full/original", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(path="/redirected-full"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/prefix/original", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(path="/redirected-prefix/original"),
            namespace=NS,
        ),
    ))

BACKEND_URL_REWRITE = _filter_case(
    "HTTPRouteBackendURLRewrite",
    "An HTTPRoute with URLRewrite filter applied at the BackendRef level",
    ("Gateway", "HTTPRoute", "HTTPRouteBackendURLRewrite"),
    "httproute-backend-url-rewrite", "backend-url-rewrite",
    (
        ExpectedResponse(
            request=Request(path="/full/original"),
            expected_request=ExpectedRequest(request=Request(path="/rewritten-full")),
            backend=V1,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/prefix/original"),
            expected_request=ExpectedRequest(request=Request(path="/rewritten-prefix/original")),
            backend=V1,
            namespace=NS,
        ),
    ))

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

REDIRECT_HOST_AND_STATUS = _filter_case(
    "HTTPRouteRedirectHostAndStatus",
    "An HTTPRoute with hostname and statusCode redirect filters",
    ("Gateway", "HTTPRoute"),
    "httproute-redirect-host-and-status", "redirect-host-and-status",
    (
        ExpectedResponse(
            request=Request(path="/hostname-redirect", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(host="example.org"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/host-and-status", unfollow_redirect=True),
            response=Response(status_code=301),
            redirect_request=RedirectRequest(host="example.org"),
            namespace=NS,
        ),
    ))

REDIRECT_PATH = _filter_case(
    "HTTPRouteRedirectPath", "An HTTPRoute with scheme redirect filter",
    ("Gateway", "HTTPRoute", "HTTPRoutePathRedirect"),
    "httproute-redirect-path", "redirect-path", (
        ExpectedResponse(
            request=Request(path="/original-prefix/lemon", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(path="/replacement-prefix/lemon"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/full/path/original", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(path="/full-path-replacement"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/path-and-host", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(host="example.org", path="/replacement-prefix"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/path-and-status", unfollow_redirect=True),
            response=Response(status_code=301),
            redirect_request=RedirectRequest(path="/replacement-prefix"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/full-path-and-host", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(host="example.org", path="/replacement-full"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/full-path-and-status", unfollow_redirect=True),
            response=Response(status_code=301),
            redirect_request=RedirectRequest(path="/replacement-full"),
            namespace=NS,
        ),
    ))

_PORT_80 = SAME_NAMESPACE
_PORT_8080 = (NS, "same-namespace-with-http-listener-on-8080")
_PORT_443 = (NS, "same-namespace-with-https-listener")

_REDIRECTS_FROM_80 = (
    ExpectedResponse(
        request=Request(path="/scheme-nil-and-port-nil", unfollow_redirect=True),
        response=Response(status_code=302),
        redirect_request=RedirectRequest(scheme="http", host="example.org"),
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/scheme-nil-and-port-80", unfollow_redirect=True),
        response=Response(status_code=302),
        redirect_request=RedirectRequest(scheme="http", host="example.org"),
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/scheme-nil-and-port-8080", unfollow_redirect=True),
        response=Response(status_code=302),
        redirect_request=RedirectRequest(scheme="http", port="8080", host="example.org"),
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/scheme-https-and-port-nil", unfollow_redirect=True),
        response=Response(status_code=302),
        redirect_request=RedirectRequest(scheme="https", host="example.org"),
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/scheme-https-and-port-443", unfollow_redirect=True),
        response=Response(status_code=302),
        redirect_request=RedirectRequest(scheme="https", host="example.org"),
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/scheme-https-and-port-8443", unfollow_redirect=True),
        response=Response(status_code=302),
        redirect_request=RedirectRequest(scheme="https", port="8443", host="example.org"),
        namespace=NS,
    ),
)

_REDIRECTS_FROM_8080 = (
    ExpectedResponse(
        request=Request(path="/scheme-nil-and-port-nil", unfollow_redirect=True),
        response=Response(status_code=302),
        redirect_request=RedirectRequest(scheme="http", port="8080", host="example.org"),
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/scheme-nil-and-port-80", unfollow_redirect=True),
        response=Response(status_code=302),
        redirect_request=RedirectRequest(scheme="http", host="example.org"),
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/scheme-https-and-port-nil", unfollow_redirect=True),
        response=Response(status_code=302),
        redirect_request=RedirectRequest(scheme="https", host="example.org"),
        namespace=NS,
    ),
)

# Sent over HTTPS with "example.org" as SNI, trusting the listener's certificate.
_REDIRECTS_FROM_443 = tuple(
    attrs.evolve(expected, server_name="example.org",
                 server_certificate=(NS, "tls-validity-checks-certificate"))
    for expected in (
        ExpectedResponse(
            request=Request(
                host="example.org",
                path="/scheme-nil-and-port-nil",
                unfollow_redirect=True,
            ),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(scheme="https", host="example.org"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(
                host="example.org",
                path="/scheme-nil-and-port-443",
                unfollow_redirect=True,
            ),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(scheme="https", host="example.org"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(
                host="example.org",
                path="/scheme-nil-and-port-8443",
                unfollow_redirect=True,
            ),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(scheme="https", port="8443", host="example.org"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(
                host="example.org",
                path="/scheme-http-and-port-nil",
                unfollow_redirect=True,
            ),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(scheme="http", host="example.org"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(
                host="example.org",
                path="/scheme-http-and-port-80",
                unfollow_redirect=True,
            ),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(scheme="http", host="example.org"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(
                host="example.org",
                path="/scheme-http-and-port-8080",
                unfollow_redirect=True,
            ),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(scheme="http", port="8080", host="example.org"),
            namespace=NS,
        ),
    ))

REDIRECT_PORT_AND_SCHEME = Case(
    short_name="HTTPRouteRedirectPortAndScheme",
    description="An HTTPRoute with port and scheme redirect filter",
    features=("Gateway", "HTTPRoute", "HTTPRoutePortRedirect", "GatewayPort8080"),
    manifests=("tests/httproute-redirect-port-and-scheme.yaml",),
    source="httproute-redirect-port-and-scheme.go",
    steps=(
        step(accepted("HTTPRoute", _PORT_80, _route("http-route-for-listener-on-port-80")),
             resolved("HTTPRoute", _route("http-route-for-listener-on-port-80"), _PORT_80),
             accepted("HTTPRoute", _PORT_8080, _route("http-route-for-listener-on-port-8080")),
             resolved("HTTPRoute", _route("http-route-for-listener-on-port-8080"), _PORT_8080),
             accepted("HTTPRoute", _PORT_443, _route("http-route-for-listener-on-port-443")),
             resolved("HTTPRoute", _route("http-route-for-listener-on-port-443"), _PORT_443)),
        step(gateway=_PORT_80, requests=_REDIRECTS_FROM_80),
        step(gateway=_PORT_8080, requests=_REDIRECTS_FROM_8080),
        step(gateway=_PORT_443, scheme="https", requests=_REDIRECTS_FROM_443),
    ),
)

REDIRECT_PORT = _filter_case(
    "HTTPRouteRedirectPort", "An HTTPRoute with a port redirect filter",
    ("Gateway", "HTTPRoute", "HTTPRoutePortRedirect"),
    "httproute-redirect-port", "redirect-port", (
        ExpectedResponse(
            request=Request(path="/port", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(port="8083"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/port-and-host", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(host="example.org", port="8083"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/port-and-status", unfollow_redirect=True),
            response=Response(status_code=301),
            redirect_request=RedirectRequest(port="8083"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/port-and-host-and-status", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(port="8083", host="example.org"),
            namespace=NS,
        ),
    ))

REDIRECT_SCHEME = _filter_case(
    "HTTPRouteRedirectScheme", "An HTTPRoute with a scheme redirect filter",
    ("Gateway", "HTTPRoute", "HTTPRouteSchemeRedirect"),
    "httproute-redirect-scheme", "redirect-scheme", (
        ExpectedResponse(
            request=Request(path="/scheme", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(scheme="https"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/scheme-and-host", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(host="example.org", scheme="https"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/scheme-and-status", unfollow_redirect=True),
            response=Response(status_code=301),
            redirect_request=RedirectRequest(scheme="https"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/scheme-and-host-and-status", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(scheme="https", host="example.org"),
            namespace=NS,
        ),
    ))

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
REQUEST_HEADER_MODIFIER = _filter_case(
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

# Go adds a fresh request id to each request before it looks for the mirrored copy.
REQUEST_MIRROR = _filter_case(
    "HTTPRouteRequestMirror", "An HTTPRoute with request mirror filter",
    ("Gateway", "HTTPRoute", "HTTPRouteRequestMirror"),
    "httproute-request-mirror", "request-mirror",
    tuple(attrs.evolve(expected, unique_query_param=REQUEST_ID)
          for expected in (
            ExpectedResponse(
                request=Request(path="/mirror"),
                expected_request=ExpectedRequest(request=Request(path="/mirror")),
                backend=V1,
                mirrored_to=(
                    MirroredBackend(backend=(NS, V2)),
                ),
                namespace=NS,
            ),
            ExpectedResponse(
                request=Request(
                    path="/mirror-and-modify-headers",
                    headers={
                        "X-Header-Remove": "remove-val",
                        "X-Header-Add-Append": "append-val-1",
                    },
                ),
                expected_request=ExpectedRequest(
                    request=Request(
                        path="/mirror-and-modify-headers",
                        headers={
                            "X-Header-Add": "header-val-1",
                            "X-Header-Add-Append": "append-val-1,header-val-2",
                            "X-Header-Set": "set-overwrites-values",
                        },
                    ),
                    absent_headers=("X-Header-Remove",),
                ),
                namespace=NS,
                backend=V1,
                mirrored_to=(
                    MirroredBackend(backend=(NS, V2)),
                ),
            ),
        )),
    check_resolved=False)

REQUEST_MULTIPLE_MIRRORS = _filter_case(
    "HTTPRouteRequestMultipleMirrors", "An HTTPRoute with multiple request mirror filters",
    ("Gateway", "HTTPRoute", "HTTPRouteRequestMirror", "HTTPRouteRequestMultipleMirrors"),
    "httproute-request-multiple-mirrors", "request-multiple-mirrors",
    tuple(attrs.evolve(expected, unique_query_param=REQUEST_ID)
          for expected in (
            ExpectedResponse(
                request=Request(path="/multi-mirror"),
                expected_request=ExpectedRequest(request=Request(path="/multi-mirror")),
                backend=V1,
                mirrored_to=(
                    MirroredBackend(backend=(NS, V2)),
                    MirroredBackend(backend=(NS, V3)),
                ),
                namespace=NS,
            ),
            ExpectedResponse(
                request=Request(
                    path="/multi-mirror-and-modify-request-headers",
                    headers={
                        "X-Header-Remove": "remove-val",
                        "X-Header-Add-Append": "append-val-1",
                    },
                ),
                expected_request=ExpectedRequest(
                    request=Request(
                        path="/multi-mirror-and-modify-request-headers",
                        headers={
                            "X-Header-Add": "header-val-1",
                            "X-Header-Add-Append": "append-val-1,header-val-2",
                            "X-Header-Set": "set-overwrites-values",
                        },
                    ),
                    absent_headers=("X-Header-Remove",),
                ),
                namespace=NS,
                backend=V1,
                mirrored_to=(
                    MirroredBackend(backend=(NS, V2)),
                    MirroredBackend(backend=(NS, V3)),
                ),
            ),
        )),
    check_resolved=False)

REQUEST_PERCENTAGE_MIRROR = _filter_case(
    "HTTPRouteRequestPercentageMirror", "An HTTPRoute with percentage based request mirroring",
    ("Gateway", "HTTPRoute", "HTTPRouteRequestPercentageMirror"),
    "httproute-request-percentage-mirror", "request-percentage-mirror",
    (
        ExpectedResponse(
            request=Request(path="/percent-mirror"),
            namespace=NS,
            expected_request=ExpectedRequest(request=Request(path="/percent-mirror")),
            backend=V1,
            mirrored_to=(
                MirroredBackend(backend=(NS, V2), percent=20),
            ),
        ),
        ExpectedResponse(
            request=Request(path="/percent-mirror-fraction"),
            namespace=NS,
            expected_request=ExpectedRequest(request=Request(path="/percent-mirror-fraction")),
            backend=V1,
            mirrored_to=(
                MirroredBackend(backend=(NS, V2), percent=50),
            ),
        ),
        ExpectedResponse(
            request=Request(
                path="/percent-mirror-and-modify-headers",
                headers={"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1"},
            ),
            expected_request=ExpectedRequest(
                request=Request(
                    path="/percent-mirror-and-modify-headers",
                    headers={
                        "X-Header-Add": "header-val-1",
                        "X-Header-Add-Append": "append-val-1,header-val-2",
                        "X-Header-Set": "set-overwrites-values",
                    },
                ),
                absent_headers=("X-Header-Remove",),
            ),
            namespace=NS,
            backend=V1,
            mirrored_to=(
                MirroredBackend(backend=(NS, V2), percent=35),
            ),
        ),
    ),
    provisional=True)

RESPONSE_HEADER_MODIFIER = _filter_case(
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

REWRITE_HOST = _filter_case(
    "HTTPRouteRewriteHost", "An HTTPRoute with hostname rewrite filter",
    ("Gateway", "HTTPRoute", "HTTPRouteHostRewrite"),
    "httproute-rewrite-host", "rewrite-host", (
        ExpectedResponse(
            request=Request(path="/one", host="rewrite.example"),
            expected_request=ExpectedRequest(
                request=Request(path="/one", host="one.example.org"),
            ),
            backend=V1,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/two", host="rewrite.example"),
            expected_request=ExpectedRequest(request=Request(path="/two", host="example.org")),
            backend=V2,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(
                path="/rewrite-host-and-modify-headers",
                host="rewrite.example",
                headers={"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1"},
            ),
            expected_request=ExpectedRequest(
                request=Request(
                    path="/rewrite-host-and-modify-headers",
                    host="test.example.org",
                    headers={
                        "X-Header-Add": "header-val-1",
                        "X-Header-Add-Append": "append-val-1,header-val-2",
                        "X-Header-Set": "set-overwrites-values",
                    },
                ),
                absent_headers=("X-Header-Remove",),
            ),
            backend=V2,
            namespace=NS,
        ),
    ))

REWRITE_PATH = _filter_case(
    "HTTPRouteRewritePath", "An HTTPRoute with path rewrite filter",
    ("Gateway", "HTTPRoute", "HTTPRoutePathRewrite"),
    "httproute-rewrite-path", "rewrite-path", (
        ExpectedResponse(
            request=Request(path="/prefix/one/two"),
            expected_request=ExpectedRequest(request=Request(path="/one/two")),
            backend=V1,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/strip-prefix/three"),
            expected_request=ExpectedRequest(request=Request(path="/three")),
            backend=V1,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/strip-prefix"),
            expected_request=ExpectedRequest(request=Request(path="/")),
            backend=V1,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/full/one/two"),
            expected_request=ExpectedRequest(request=Request(path="/one")),
            backend=V1,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(
                path="/full/rewrite-path-and-modify-headers/test",
                headers={
                    "X-Header-Remove": "remove-val",
                    "X-Header-Add-Append": "append-val-1",
                    "X-Header-Set": "set-val",
                },
            ),
            expected_request=ExpectedRequest(
                request=Request(
                    path="/test",
                    headers={
                        "X-Header-Add": "header-val-1",
                        "X-Header-Add-Append": "append-val-1,header-val-2",
                        "X-Header-Set": "set-overwrites-values",
                    },
                ),
                absent_headers=("X-Header-Remove",),
            ),
            backend=V1,
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(
                path="/prefix/rewrite-path-and-modify-headers/one",
                headers={
                    "X-Header-Remove": "remove-val",
                    "X-Header-Add-Append": "append-val-1",
                    "X-Header-Set": "set-val",
                },
            ),
            expected_request=ExpectedRequest(
                request=Request(
                    path="/prefix/one",
                    headers={
                        "X-Header-Add": "header-val-1",
                        "X-Header-Add-Append": "append-val-1,header-val-2",
                        "X-Header-Set": "set-overwrites-values",
                    },
                ),
                absent_headers=("X-Header-Remove",),
            ),
            backend=V1,
            namespace=NS,
        ),
    ))

CASES: tuple[Case, ...] = (
    REDIRECT_303,
    REDIRECT_307,
    REDIRECT_308,
    BACKEND_REQUEST_REDIRECT,
    BACKEND_URL_REWRITE,
    CORS,
    REDIRECT_HOST_AND_STATUS,
    REDIRECT_PATH,
    REDIRECT_PORT_AND_SCHEME,
    REDIRECT_PORT,
    REDIRECT_SCHEME,
    REQUEST_HEADER_MODIFIER_BACKEND_WEIGHTS,
    REQUEST_HEADER_MODIFIER,
    BACKEND_REQUEST_HEADER_MODIFIER,
    REQUEST_MIRROR,
    REQUEST_MULTIPLE_MIRRORS,
    REQUEST_PERCENTAGE_MIRROR,
    RESPONSE_HEADER_MODIFIER,
    REWRITE_HOST,
    REWRITE_PATH,
)
