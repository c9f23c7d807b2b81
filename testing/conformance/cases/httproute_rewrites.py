"""HTTPRoute URL rewrite tests through a Gateway (``tests/httproute-*rewrite*.go``)."""

from __future__ import annotations

from ..model import (
    INFRA_NS,
    Case,
    ExpectedRequest,
    ExpectedResponse,
    Request,
)
from .checks import single_route_case

NS = INFRA_NS
V1 = "infra-backend-v1"
V2 = "infra-backend-v2"


BACKEND_URL_REWRITE = single_route_case(
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

REWRITE_HOST = single_route_case(
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

REWRITE_PATH = single_route_case(
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
    BACKEND_URL_REWRITE,
    REWRITE_HOST,
    REWRITE_PATH,
)
