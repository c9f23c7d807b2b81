"""Mesh (GAMMA) route tests (``tests/mesh/grpcroute-*.go``, ``tests/mesh/httproute-*.go``):
requests sent from an echo client pod in the mesh to Services whose HTTPRoutes or GRPCRoutes
have a Service parent. The mesh suite's Go checks no route status; every case is requests
from a client."""

from __future__ import annotations

from ..model import (
    MESH_NS,
    Case,
    ExpectedRequest,
    ExpectedResponse,
    RedirectRequest,
    Request,
    Response,
    Step,
)
from .checks import ECHO_V1, ECHO_V2, mesh_case

NS = MESH_NS


def _grpc_header_case(name: str, match: str, headers: dict[str, str],
                      expected: dict[str, str], absent: tuple[str, ...], backend: str
                      ) -> ExpectedResponse:
    """A gRPC call through the mesh client; its x-test-case header picks the route rule."""
    return ExpectedResponse(
        test_case_name=name,
        request=Request(protocol="grpc", host="echo:7070",
                        headers={"x-test-case": match, **headers}),
        expected_request=ExpectedRequest(
            request=Request(protocol="grpc", host="echo:7070", headers=expected),
            absent_headers=absent),
        response=Response(status_codes=(200,)),
        backend=backend,
        namespace=NS,
    )

GRPC_ROUTE_REQUEST_HEADER_MODIFIER = Case(
    short_name="MeshGRPCRouteRequestHeaderModifier",
    description="A GRPCRoute with RequestHeaderModifier filter should modify request headers in "
    "mesh mode",
    features=("Mesh", "GRPCRoute"),
    manifests=("tests/mesh/grpcroute-request-header-modifier.yaml",),
    source="mesh/grpcroute-request-header-modifier.go",
    steps=(
        # Go sends the four in parallel subtests, three from the v1 pod and one from v2.
        Step(client=ECHO_V1, requests=(
            _grpc_header_case(
                "Set headers -- overwrites existing header", "set",
                {"some-other-header": "this-header-should-be-set",
                 "x-header-set": "this-value-should-be-overwritten"},
                {"x-test-case": "set", "some-other-header": "this-header-should-be-set",
                 "x-header-set": "set-overwrites-values"},
                (), "echo-v1"),
            _grpc_header_case(
                "Add headers -- appends to existing header", "add",
                {"x-header-add": "this-value-should-be-appended"},
                {"x-test-case": "add",
                 "x-header-add": "this-value-should-be-appended,add-appends-values"},
                (), "echo-v1"),
            _grpc_header_case(
                "Remove headers -- removes headers", "remove",
                {"x-header-remove": "this-should-be-removed"},
                {"x-test-case": "remove"},
                ("x-header-remove",), "echo-v1"),
        )),
        Step(client=ECHO_V2, requests=(
            _grpc_header_case(
                "Multiple operations -- set, add, and remove headers", "multi",
                {"x-header-set-2": "set-header-2", "x-header-add-2": "add-header-2",
                 "x-header-remove-2": "should-be-removed-2"},
                {"x-test-case": "multi", "x-header-set-1": "header-set-1",
                 "x-header-set-2": "header-set-2", "x-header-add-1": "header-add-1",
                 "x-header-add-2": "add-header-2,header-add-2"},
                ("x-header-remove-1", "x-header-remove-2"), "echo-v2"),
        )),
    ),
)

GRPC_ROUTE_WEIGHT = Case(
    short_name="MeshGRPCRouteWeight",
    description="A GRPCRoute with weighted backends in mesh mode",
    features=("Mesh", "GRPCRoute"),
    manifests=("tests/mesh/grpcroute-weight.yaml",),
    source="mesh/grpcroute-weight.go",
    steps=(
        Step(client=ECHO_V1, requests=(
            ExpectedResponse(request=Request(protocol="grpc", host="echo:7070"),
                             response=Response(status_code=200), namespace=NS),
        ), weights={"echo-v1": 0.7, "echo-v2": 0.3}),
    ),
)

REDIRECT_303 = mesh_case(
    "MeshHTTPRoute303Redirect", "An HTTPRoute with statusCode 303 redirect filter",
    ("Mesh", "HTTPRoute", "HTTPRoute303RedirectStatusCode"), "httproute-303-redirect",
    (
        ExpectedResponse(
            request=Request(path="/redirect", unfollow_redirect=True),
            response=Response(status_code=303),
            redirect_request=RedirectRequest(path="/redirect"),
            namespace=NS,
        ),
    ),
    provisional=True)

REDIRECT_307 = mesh_case(
    "MeshHTTPRoute307Redirect", "An HTTPRoute with statusCode 307 redirect filter",
    ("Mesh", "HTTPRoute", "HTTPRoute307RedirectStatusCode"), "httproute-307-redirect",
    (
        ExpectedResponse(
            request=Request(path="/temporary", unfollow_redirect=True),
            response=Response(status_code=307),
            redirect_request=RedirectRequest(path="/temporary"),
            namespace=NS,
        ),
    ),
    provisional=True)

REDIRECT_308 = mesh_case(
    "MeshHTTPRoute308Redirect", "An HTTPRoute with statusCode 308 redirect filter",
    ("Mesh", "HTTPRoute", "HTTPRoute308RedirectStatusCode"), "httproute-308-redirect",
    (
        ExpectedResponse(
            request=Request(path="/permanent", unfollow_redirect=True),
            response=Response(status_code=308),
            redirect_request=RedirectRequest(path="/permanent"),
            namespace=NS,
        ),
    ),
    provisional=True)

MATCHING = mesh_case(
    "MeshHTTPRouteMatching",
    "A single HTTPRoute with path and header matching for different backends",
    ("Mesh", "HTTPRoute"), "httproute-matching",
    (
        ExpectedResponse(request=Request(path="/"), backend="echo-v1", namespace=NS),
        ExpectedResponse(request=Request(path="/example"), backend="echo-v1", namespace=NS),
        ExpectedResponse(
            request=Request(path="/", headers={"Version": "one"}),
            backend="echo-v1",
            namespace=NS,
        ),
        ExpectedResponse(request=Request(path="/v2"), backend="echo-v2", namespace=NS),
        ExpectedResponse(request=Request(path="/v2/example"), backend="echo-v2", namespace=NS),
        ExpectedResponse(
            request=Request(path="/", headers={"Version": "two"}),
            backend="echo-v2",
            namespace=NS,
        ),
        ExpectedResponse(request=Request(path="/v2/"), backend="echo-v2", namespace=NS),
        ExpectedResponse(request=Request(path="/v2example"), backend="echo-v1", namespace=NS),
        ExpectedResponse(
            request=Request(path="/foo/v2/example"),
            backend="echo-v1",
            namespace=NS,
        ),
    ))

NAMED_RULE = mesh_case(
    "MeshHTTPRouteNamedRule", "An HTTPRoute with a named HTTPRouteRule",
    ("Mesh", "HTTPRoute", "MeshHTTPRouteNamedRouteRule"), "httproute-named-rule",
    (
        ExpectedResponse(
            request=Request(path="/named"),
            expected_request=ExpectedRequest(request=Request(path="/named")),
            backend="echo-v1",
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/unnamed"),
            expected_request=ExpectedRequest(request=Request(path="/named")),
            backend="echo-v2",
            namespace=NS,
        ),
    ),
    provisional=True)

# query param matching alone, then with other match types
_QUERY_PARAM_REQUESTS = (
    *(
        ExpectedResponse(request=Request(path="/?animal=whale"), backend="echo-v1", namespace=NS),
        ExpectedResponse(
            request=Request(path="/?animal=dolphin"),
            backend="echo-v2",
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/?animal=whale&otherparam=irrelevant"),
            backend="echo-v1",
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/?animal=dolphin&color=yellow"),
            backend="echo-v2",
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
        ExpectedResponse(
            request=Request(path="/path1?animal=whale"),
            backend="echo-v1",
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(headers={"version": "one"}, path="/?animal=whale"),
            backend="echo-v2",
            namespace=NS,
        ),
    ),
    *(
        ExpectedResponse(
            request=Request(path="/path3?animal=shark"),
            backend="echo-v1",
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(headers={"version": "three"}, path="/path4?animal=kraken"),
            backend="echo-v1",
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
        ExpectedResponse(
            request=Request(path="/path5?animal=hydra"),
            backend="echo-v1",
            namespace=NS,
        ),
    ),
)

QUERY_PARAM_MATCHING = mesh_case(
    "MeshHTTPRouteQueryParamMatching",
    "A single HTTPRoute with query param matching for different backends",
    ("Mesh", "HTTPRoute", "MeshHTTPRouteQueryParamMatching"), "httproute-query-param-matching",
    _QUERY_PARAM_REQUESTS)

REDIRECT_HOST_AND_STATUS = mesh_case(
    "MeshHTTPRouteRedirectHostAndStatus",
    "An HTTPRoute with hostname and statusCode redirect filters",
    ("Mesh", "HTTPRoute"), "httproute-redirect-host-and-status",
    (
        ExpectedResponse(
            request=Request(host="echo", path="/hostname-redirect", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(host="example.org"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(host="echo", path="/host-and-status", unfollow_redirect=True),
            response=Response(status_code=301),
            redirect_request=RedirectRequest(host="example.org"),
            namespace=NS,
        ),
    ))

REDIRECT_PATH = mesh_case(
    "MeshHTTPRouteRedirectPath", "An HTTPRoute with scheme redirect filter",
    ("Mesh", "HTTPRoute", "MeshHTTPRouteRedirectPath"), "httproute-redirect-path",
    (
        ExpectedResponse(
            request=Request(host="echo", path="/original-prefix/lemon", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(path="/replacement-prefix/lemon"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(host="echo", path="/full/path/original", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(path="/full-path-replacement"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(host="echo", path="/path-and-host", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(host="example.org", path="/replacement-prefix"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(host="echo", path="/path-and-status", unfollow_redirect=True),
            response=Response(status_code=301),
            redirect_request=RedirectRequest(path="/replacement-prefix"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(host="echo", path="/full-path-and-host", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(host="example.org", path="/replacement-full"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(host="echo", path="/full-path-and-status", unfollow_redirect=True),
            response=Response(status_code=301),
            redirect_request=RedirectRequest(path="/replacement-full"),
            namespace=NS,
        ),
    ))

REDIRECT_PORT = mesh_case(
    "MeshHTTPRouteRedirectPort", "An HTTPRoute with a port redirect filter",
    ("Mesh", "HTTPRoute", "MeshHTTPRouteRedirectPort"), "httproute-redirect-port",
    (
        ExpectedResponse(
            request=Request(host="echo", path="/port", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(port="8083"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(host="echo", path="/port-and-host", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(host="example.org", port="8083"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(host="echo", path="/port-and-status", unfollow_redirect=True),
            response=Response(status_code=301),
            redirect_request=RedirectRequest(port="8083"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(
                host="echo",
                path="/port-and-host-and-status",
                unfollow_redirect=True,
            ),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(port="8083", host="example.org"),
            namespace=NS,
        ),
    ))

SCHEME_REDIRECT = mesh_case(
    "MeshHTTPRouteSchemeRedirect", "An HTTPRoute with a scheme redirect filter",
    ("Mesh", "HTTPRoute", "MeshHTTPRouteSchemeRedirect"), "httproute-redirect-scheme",
    (
        ExpectedResponse(
            request=Request(host="echo", path="/scheme", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(scheme="https"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(host="echo", path="/scheme-and-host", unfollow_redirect=True),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(host="example.org", scheme="https"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(host="echo", path="/scheme-and-status", unfollow_redirect=True),
            response=Response(status_code=301),
            redirect_request=RedirectRequest(scheme="https"),
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(
                host="echo",
                path="/scheme-and-host-and-status",
                unfollow_redirect=True,
            ),
            response=Response(status_code=302),
            redirect_request=RedirectRequest(scheme="https", host="example.org"),
            namespace=NS,
        ),
    ))

_HEADER_MODIFIER_REQUESTS = (
    ExpectedResponse(
        request=Request(path="/set", headers={"Some-Other-Header": "val"}),
        expected_request=ExpectedRequest(
            request=Request(
                path="/set",
                headers={"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"},
            ),
        ),
        backend="echo-v1",
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
        backend="echo-v1",
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
        backend="echo-v1",
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
        backend="echo-v1",
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(path="/remove", headers={"X-Header-Remove": "val"}),
        expected_request=ExpectedRequest(
            request=Request(path="/remove"),
            absent_headers=("X-Header-Remove",),
        ),
        backend="echo-v1",
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
        backend="echo-v1",
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
        backend="echo-v1",
        namespace=NS,
    ),
)

# Both tests run the same Go function on their own manifest.
REQUEST_HEADER_MODIFIER = mesh_case(
    "MeshHTTPRouteRequestHeaderModifier",
    "An HTTPRoute has request header modifier filters applied correctly",
    ("Mesh", "HTTPRoute"), "httproute-request-header-modifier", _HEADER_MODIFIER_REQUESTS)

BACKEND_REQUEST_HEADER_MODIFIER = mesh_case(
    "MeshHTTPRouteBackendRequestHeaderModifier",
    "An HTTPRoute backend has request header modifier filters applied correctly",
    ("Mesh", "HTTPRoute", "MeshHTTPRouteBackendRequestHeaderModification"),
    "httproute-request-header-modifier", _HEADER_MODIFIER_REQUESTS,
    manifests=("tests/mesh/httproute-request-header-modifier-backend.yaml",))

REWRITE_PATH = mesh_case(
    "MeshHTTPRouteRewritePath", "An HTTPRoute with path rewrite filter",
    ("Mesh", "HTTPRoute", "MeshHTTPRouteRewritePath"), "httproute-rewrite-path",
    (
        ExpectedResponse(
            request=Request(path="/prefix/one/two", host="echo"),
            expected_request=ExpectedRequest(request=Request(path="/one/two")),
            backend="echo-v1",
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/strip-prefix/three", host="echo"),
            expected_request=ExpectedRequest(request=Request(path="/three")),
            backend="echo-v1",
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/strip-prefix", host="echo"),
            expected_request=ExpectedRequest(request=Request(path="/")),
            backend="echo-v1",
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(path="/full/one/two", host="echo"),
            expected_request=ExpectedRequest(request=Request(path="/one")),
            backend="echo-v1",
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(
                host="echo",
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
            backend="echo-v1",
            namespace=NS,
        ),
        ExpectedResponse(
            request=Request(
                host="echo",
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
            backend="echo-v1",
            namespace=NS,
        ),
    ))

SIMPLE_SAME_NAMESPACE = mesh_case(
    "MeshHTTPRouteSimpleSameNamespace",
    "A single HTTPRoute in the gateway-conformance-mesh namespace attaches to a Service in the "
    "same namespace",
    ("Mesh", "HTTPRoute"), "httproute-simple-same-namespace",
    (ExpectedResponse(
        request=Request(path="/", host="echo"),
        response=Response(status_code=200),
        backend="echo-v1",
        namespace=NS,
    ),))

WEIGHT = Case(
    short_name="MeshHTTPRouteWeight",
    description="An HTTPRoute with weighted backends",
    features=("Mesh", "HTTPRoute"),
    manifests=("tests/mesh/httproute-weight.yaml",),
    source="mesh/httproute-weight.go",
    steps=(
        Step(client=ECHO_V1, requests=(
            ExpectedResponse(request=Request(path="/", host="echo"),
                             response=Response(status_code=200), namespace=NS),
        ), weights={"echo-v1": 0.7, "echo-v2": 0.3}),
    ),
)


CASES: tuple[Case, ...] = (
    GRPC_ROUTE_REQUEST_HEADER_MODIFIER,
    GRPC_ROUTE_WEIGHT,
    REDIRECT_303,
    REDIRECT_307,
    REDIRECT_308,
    MATCHING,
    NAMED_RULE,
    QUERY_PARAM_MATCHING,
    REDIRECT_HOST_AND_STATUS,
    REDIRECT_PATH,
    REDIRECT_PORT,
    SCHEME_REDIRECT,
    REQUEST_HEADER_MODIFIER,
    BACKEND_REQUEST_HEADER_MODIFIER,
    REWRITE_PATH,
    SIMPLE_SAME_NAMESPACE,
    WEIGHT,
)
