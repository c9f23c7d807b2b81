"""Mesh (GAMMA) tests of basic reachability and of which requests a route applies to
(``tests/mesh/mesh-*.go``): requests sent from an echo client pod in the mesh."""

from __future__ import annotations

from ..model import (
    MESH_CONSUMER_NS,
    MESH_NS,
    Case,
    ExpectedResponse,
    Request,
    Response,
    Step,
)
from .checks import ECHO_V1, ECHO_V2, mesh_case

NS = MESH_NS


BASIC = Case(
    short_name="MeshBasic",
    description="A mesh client can communicate with a mesh server. This tests basic "
    "reachability with no configuration applied.",
    features=("Mesh",),
    manifests=(),
    source="mesh/mesh-basic.go",
    steps=(Step(client=ECHO_V1, requests=(
        ExpectedResponse(
            request=Request(host="echo", method="GET"),
            response=Response(status_code=200),
        ),
    )),),
)

CONSUMER_ROUTE = Case(
    short_name="MeshConsumerRoute",
    description="An HTTPRoute in a namespace other than its parentRef's namespace only affects "
    "requests from the route's namespace",
    features=("Mesh", "MeshConsumerRoute", "HTTPRoute", "HTTPRouteResponseHeaderModification"),
    manifests=("tests/mesh/mesh-consumer-route.yaml",),
    source="mesh/mesh-consumer-route.go",
    steps=(
        # from the route's own (consumer) namespace
        Step(client=(MESH_CONSUMER_NS, "app=echo,version=v1"),
             requests=(
                ExpectedResponse(
                    test_case_name="request from consumer route's namespace modified by HTTPRoute",
                    request=Request(
                        host="echo-v1.gateway-conformance-mesh",
                        method="GET",
                        path="/",
                    ),
                    response=Response(status_code=200, headers={"X-Header-Set": "set"}),
                    backend="echo-v1",
                ),
            )),
        # from the Service's (producer) namespace
        Step(client=ECHO_V1, requests=(
            ExpectedResponse(
                test_case_name=(
                    "request not from consumer route's namespace not modified by HTTPRoute"
                ),
                request=Request(host="echo-v1.gateway-conformance-mesh", method="GET", path="/"),
                response=Response(status_code=200, absent_headers=("X-Header-Set",)),
                backend="echo-v1",
            ),
        )),
    ),
)

FRONTEND_HOSTNAME = mesh_case(
    "MeshFrontendHostname", "Mesh parentRef matches Service IP (not Host)",
    ("Mesh", "MeshClusterIPMatching", "HTTPRoute", "HTTPRouteResponseHeaderModification"),
    "mesh-frontend-hostname", (
        ExpectedResponse(
            test_case_name="Send to service with wrong hostname",
            request=Request(host="echo-v2", headers={"Host": "echo-v1"}, method="GET"),
            response=Response(status_code=200, headers={"X-Header-Set": "set"}),
            backend="echo-v2",
        ),
        ExpectedResponse(
            test_case_name="Send to other service with matching hostname",
            request=Request(host="echo-v1", headers={"Host": "echo-v2"}, method="GET"),
            response=Response(status_code=200, absent_headers=("X-Header-Set",)),
            backend="echo-v1",
        ),
    ),
    manifests=("tests/mesh/mesh-frontend.yaml",))

FRONTEND = mesh_case(
    "MeshFrontend", "Mesh rules should only apply to the associated frontend",
    ("Mesh", "HTTPRoute", "HTTPRouteResponseHeaderModification"), "mesh-frontend", (
        ExpectedResponse(
            test_case_name="Send to service",
            request=Request(host="echo-v2", method="GET"),
            response=Response(status_code=200, headers={"X-Header-Set": "set"}),
            backend="echo-v2"),
        # straight to the v2 pod's address, bypassing the Service
        ExpectedResponse(
            test_case_name="Send to pod IP",
            request=Request(host="{pod}:8080", method="GET"),
            response=Response(status_code=200, absent_headers=("X-Header-Set",)),
            backend="echo-v2", host_pod=ECHO_V2),
    ))

PORTS = mesh_case(
    "MeshPorts", "A mesh route can optionally configure 'port' in parentRef",
    ("Mesh", "HTTPRoute", "HTTPRouteParentRefPort", "HTTPRouteResponseHeaderModification"),
    "mesh-ports", (
        ExpectedResponse(
            test_case_name="Explicit port set, send to that port",
            request=Request(host="echo-v1", method="GET"),
            response=Response(status_code=200, headers={"X-Header-Set": "v1"}),
            backend="echo-v1",
        ),
        ExpectedResponse(
            test_case_name="Explicit port, send to an excluded port",
            request=Request(host="echo-v1:8080", method="GET"),
            response=Response(status_code=200, absent_headers=("X-Header-Set",)),
            backend="echo-v1",
        ),
        ExpectedResponse(
            test_case_name="No port set",
            request=Request(host="echo-v2", method="GET"),
            response=Response(status_code=200, headers={"X-Header-Set": "v2"}),
            backend="echo-v2",
        ),
        ExpectedResponse(
            test_case_name="No port set",
            request=Request(host="echo-v2:8080", method="GET"),
            response=Response(status_code=200, headers={"X-Header-Set": "v2"}),
            backend="echo-v2",
        ),
    ))

TRAFFIC_SPLIT = mesh_case(
    "MeshTrafficSplit",
    "A mesh client can send traffic to a Service which is split between two versions",
    ("Mesh", "HTTPRoute"), "mesh-split", (
        ExpectedResponse(
            request=Request(host="echo", method="GET", path="/v1"),
            response=Response(status_code=200),
            backend="echo-v1",
        ),
        ExpectedResponse(
            request=Request(host="echo", method="GET", path="/v2"),
            response=Response(status_code=200),
            backend="echo-v2",
        ),
    ))


CASES: tuple[Case, ...] = (
    BASIC,
    CONSUMER_ROUTE,
    FRONTEND_HOSTNAME,
    FRONTEND,
    PORTS,
    TRAFFIC_SPLIT,
)
