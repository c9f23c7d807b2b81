"""HTTPRoute redirect tests through a Gateway (``tests/httproute-*redirect*.go``)."""

from __future__ import annotations

import attrs

from ..model import (
    INFRA_NS,
    Case,
    ExpectedResponse,
    RedirectRequest,
    Request,
    Response,
)
from .checks import accepted, resolved, single_route_case, step

NS = INFRA_NS
SAME_NAMESPACE = (NS, "same-namespace")


def _route(name: str) -> tuple[str, str]:
    return (NS, name)


REDIRECT_303 = single_route_case(
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

REDIRECT_307 = single_route_case(
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

REDIRECT_308 = single_route_case(
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

BACKEND_REQUEST_REDIRECT = single_route_case(
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

REDIRECT_HOST_AND_STATUS = single_route_case(
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

REDIRECT_PATH = single_route_case(
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

REDIRECT_PORT = single_route_case(
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

REDIRECT_SCHEME = single_route_case(
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

CASES: tuple[Case, ...] = (
    REDIRECT_303,
    REDIRECT_307,
    REDIRECT_308,
    BACKEND_REQUEST_REDIRECT,
    REDIRECT_HOST_AND_STATUS,
    REDIRECT_PATH,
    REDIRECT_PORT_AND_SCHEME,
    REDIRECT_PORT,
    REDIRECT_SCHEME,
)
