"""HTTPRoute request mirror tests through a Gateway (``tests/httproute-request-*mirror*.go``)."""

from __future__ import annotations

import attrs

from ..model import (
    INFRA_NS,
    Case,
    ExpectedRequest,
    ExpectedResponse,
    MirroredBackend,
    Request,
)
from .checks import single_route_case

NS = INFRA_NS
V1 = "infra-backend-v1"
V2 = "infra-backend-v2"
V3 = "infra-backend-v3"
# AddRequestIDQueryParam's parameter: it tells one mirrored request from another in the logs
REQUEST_ID = "gateway-api-conformance-request-id"


# Go adds a fresh request id to each request before it looks for the mirrored copy.
REQUEST_MIRROR = single_route_case(
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

REQUEST_MULTIPLE_MIRRORS = single_route_case(
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

REQUEST_PERCENTAGE_MIRROR = single_route_case(
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

CASES: tuple[Case, ...] = (
    REQUEST_MIRROR,
    REQUEST_MULTIPLE_MIRRORS,
    REQUEST_PERCENTAGE_MIRROR,
)
