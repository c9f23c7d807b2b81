"""HTTPRoute tests of routing through a Gateway (``tests/httproute-*.go``: backend
protocols, namespaces, hostnames, HTTPS listeners, listener ports, several Gateways, Service
types, weights)."""

from __future__ import annotations

from ..model import (
    INFRA_NS,
    WEB_BACKEND_NS,
    Case,
    Condition,
    EndpointSlicesFromPods,
    ExpectedResponse,
    GatewayMustBe,
    Request,
    Response,
    WebSocketEcho,
)
from .checks import LISTENER_ACCEPTED_RESOLVED, accepted, parent_status, resolved, step

NS = INFRA_NS
SAME_NAMESPACE = (NS, "same-namespace")
V1 = "infra-backend-v1"
V2 = "infra-backend-v2"
V3 = "infra-backend-v3"


def _route(name: str) -> tuple[str, str]:
    return (NS, name)


BACKEND_PROTOCOL_H2C = Case(
    short_name="HTTPRouteBackendProtocolH2C",
    description="A HTTPRoute with a BackendRef that has an appProtocol kubernetes.io/h2c "
    "should be functional",
    features=("Gateway", "HTTPRoute", "HTTPRouteBackendProtocolH2C"),
    manifests=("tests/httproute-backend-protocol-h2c.yaml",),
    source="httproute-backend-protocol-h2c.go",
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, _route("backend-protocol-h2c")),
             gateway=SAME_NAMESPACE, requests=(
                 ExpectedResponse(
                    request=Request(path="/", protocol="H2C_PRIOR_KNOWLEDGE"),
                    response=Response(status_code=200),
                    backend=V1,
                    namespace=INFRA_NS,
                ),
             )),
    ),
)

BACKEND_PROTOCOL_WEBSOCKET = Case(
    short_name="HTTPRouteBackendProtocolWebSocket",
    description="A HTTPRoute with a BackendRef that has an appProtocol kubernetes.io/ws should "
    "be functional",
    features=("Gateway", "HTTPRoute", "HTTPRouteBackendProtocolWebSocket"),
    manifests=("tests/httproute-backend-protocol-websocket.yaml",),
    source="httproute-backend-protocol-websocket.go",
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, _route("backend-protocol-ws")),
             gateway=SAME_NAMESPACE, scheme="ws", requests=(
                 # Go's origin ends in the running subtest's full name, which begins with the
                 # name of the Go test function that runs the suite.
                 WebSocketEcho(
                     path="/ws",
                     origin="ws://gateway/HTTPRouteBackendProtocolWebSocket/"
                     "websocket_connection_should_reach_backend",
                     text="Websocket Support!", binary=bytes([1, 2, 3, 4, 5, 6, 7])),
             )),
    ),
)

CROSS_NAMESPACE = Case(
    short_name="HTTPRouteCrossNamespace",
    description="A single HTTPRoute in the gateway-conformance-web-backend namespace should "
    "attach to Gateway in another namespace",
    features=("Gateway", "HTTPRoute"),
    manifests=("tests/httproute-cross-namespace.yaml",),
    source="httproute-cross-namespace.go",
    steps=(
        step(accepted("HTTPRoute", (NS, "backend-namespaces"), (WEB_BACKEND_NS, "cross-namespace")),
             resolved("HTTPRoute", (WEB_BACKEND_NS, "cross-namespace"), (NS, "backend-namespaces")),
             gateway=(NS, "backend-namespaces"), requests=(
                 ExpectedResponse(request=Request(path="/"), response=Response(status_code=200),
                                  backend="web-backend", namespace=WEB_BACKEND_NS),
             )),
    ),
)

_INTERSECTION = (NS, "httproute-hostname-intersection")
_INTERSECTING = tuple(_route(name) for name in (
    "specific-host-matches-listener-specific-host", "specific-host-matches-listener-wildcard-host",
    "wildcard-host-matches-listener-specific-host", "wildcard-host-matches-listener-wildcard-host"))
_INTERSECTION_ALL = (NS, "httproute-hostname-intersection-all")
_ALL_ROUTE = _route("httproute-hostname-intersection-all")

_INTERSECTING_REQUESTS = (
    ExpectedResponse(
        request=Request(host="very.specific.com", path="/s1"),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(host="very.specific.com:1234", path="/s1"),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(host="non.matching.com", path="/s1"),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(host="foo.nonmatchingwildcard.io", path="/s1"),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(host="foo.wildcard.io", path="/s1"),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(host="very.specific.com", path="/non-matching-prefix"),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(host="foo.wildcard.io", path="/s2"),
        backend=V2,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(host="bar.wildcard.io", path="/s2"),
        backend=V2,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(host="foo.bar.wildcard.io", path="/s2"),
        backend=V2,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(host="non.matching.com", path="/s2"),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(host="wildcard.io", path="/s2"),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(host="very.specific.com", path="/s2"),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(host="foo.wildcard.io", path="/non-matching-prefix"),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(host="very.specific.com", path="/s3"),
        backend=V3,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(host="non.matching.com", path="/s3"),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(host="foo.specific.com", path="/s3"),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(host="foo.wildcard.io", path="/s3"),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(host="very.specific.com", path="/non-matching-prefix"),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(host="foo.anotherwildcard.io", path="/s4"),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(host="bar.anotherwildcard.io", path="/s4"),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(host="foo.bar.anotherwildcard.io", path="/s4"),
        backend=V1,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(host="anotherwildcard.io", path="/s4"),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(host="foo.wildcard.io", path="/s4"),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(host="very.specific.com", path="/s4"),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(host="foo.anotherwildcard.io", path="/non-matching-prefix"),
        response=Response(status_code=404),
    ),
)

_NOT_INTERSECTING_REQUESTS = (
    ExpectedResponse(
        request=Request(host="specific.but.wrong.com", path="/s5"),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(host="wildcard.io", path="/s5"),
        response=Response(status_code=404),
    ),
)

_INTERSECTION_ALL_REQUESTS = (
    ExpectedResponse(request=Request(host="first.com", path="/"), backend=V2, namespace=NS),
    ExpectedResponse(request=Request(host="sub.first.com", path="/"), backend=V2, namespace=NS),
    ExpectedResponse(request=Request(host="second.com", path="/"), backend=V2, namespace=NS),
    ExpectedResponse(request=Request(host="sub.second.com", path="/"), backend=V2, namespace=NS),
    ExpectedResponse(
        request=Request(host="third.com", path="/"),
        namespace=NS,
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(host="sub.third.com", path="/"),
        namespace=NS,
        response=Response(status_code=404),
    ),
)

HOSTNAME_INTERSECTION = Case(
    short_name="HTTPRouteHostnameIntersection",
    description="HTTPRoutes should attach to listeners only if they have intersecting "
    "hostnames, and should accept requests only for the intersecting hostnames",
    features=("Gateway", "HTTPRoute"),
    manifests=("tests/httproute-hostname-intersection.yaml",),
    source="httproute-hostname-intersection.go",
    steps=(
        step(namespaces_ready=(NS,)),
        # HTTPRoutes whose hostnames intersect the listeners'
        step(accepted("HTTPRoute", _INTERSECTION, *_INTERSECTING),
             *(resolved("HTTPRoute", route, _INTERSECTION) for route in _INTERSECTING),
             gateway=_INTERSECTION,
             requests=_INTERSECTING_REQUESTS),
        # an HTTPRoute whose hostnames intersect none
        step(accepted("HTTPRoute", _INTERSECTION),
             parent_status("HTTPRoute", _route("no-intersecting-hosts"), _INTERSECTION,
                           Condition("Accepted", "False", "NoMatchingListenerHostname"),
                           namespace_required=True),
             gateway=_INTERSECTION,
             requests=_NOT_INTERSECTING_REQUESTS),
        # only Accepted HTTPRoutes count in AttachedRoutes
        step(GatewayMustBe(_INTERSECTION, listeners={
            "listener-1": (2, LISTENER_ACCEPTED_RESOLVED, ("HTTPRoute",)),
            "listener-2": (1, LISTENER_ACCEPTED_RESOLVED, ("HTTPRoute",)),
            "listener-3": (1, LISTENER_ACCEPTED_RESOLVED, ("HTTPRoute",)),
        })),
        # an HTTPRoute meets a listener without a hostname
        step(accepted("HTTPRoute", _INTERSECTION_ALL, _ALL_ROUTE),
             resolved("HTTPRoute", _ALL_ROUTE, _INTERSECTION_ALL),
             gateway=_INTERSECTION_ALL,
             requests=_INTERSECTION_ALL_REQUESTS),
    ),
)

_HTTPS = (NS, "same-namespace-with-https-listener")
_SERVER_CERT = (NS, "tls-validity-checks-certificate")
_MISDIRECTED_ROUTES = tuple(_route(f"https-listener-detect-misdirected-requests-test-{n}")
                            for n in (1, 2, 3, 4))

def _misdirected(server_name: str, host: str, status: int, backend: str = "") -> ExpectedResponse:
    return ExpectedResponse(
        request=Request(host=host, path="/detect-misdirected-requests", protocol="H2"),
        response=Response(status_codes=(status,)), backend=backend, namespace=NS,
        server_name=server_name, server_certificate=_SERVER_CERT)

HTTPS_LISTENER_DETECT_MISDIRECTED_REQUESTS = Case(
    short_name="HTTPRouteHTTPSListenerDetectMisdirectedRequests",
    description="HTTPS listeners on the same port detect misdirected requests and return HTTP "
    "421 when appropriate",
    features=("Gateway", "GatewayHTTPSListenerDetectMisdirectedRequests", "HTTPRoute"),
    manifests=("tests/httproute-https-listener-detect-misdirected-requests.yaml",),
    source="httproute-https-listener-detect-misdirected-requests.go",
    steps=(
        step(accepted("HTTPRoute", _HTTPS, *_MISDIRECTED_ROUTES),
             *(resolved("HTTPRoute", route, _HTTPS) for route in _MISDIRECTED_ROUTES),
             gateway=_HTTPS, scheme="https", requests=(
                 _misdirected("example.org", "example.org", 200, V1),
                 _misdirected("example.org", "second-example.org", 421),
                 _misdirected("example.org", "unknown-example.org", 404),
                 _misdirected("second-example.org", "second-example.org", 200, V2),
                 _misdirected("second-example.org", "example.org", 421),
                 _misdirected("second-example.org", "unknown-example.org", 421),
                 _misdirected("third-example.wildcard.org", "third-example.wildcard.org", 200, V3),
                 _misdirected("third-example.wildcard.org", "fith-example.wildcard.org", 200, V3),
                 _misdirected("third-example.wildcard.org", "fourth-example.wildcard.org", 421),
                 _misdirected("third-example.wildcard.org", "second-example.org", 421),
                 _misdirected("third-example.wildcard.org", "unknown-example.org", 421),
                 _misdirected("fourth-example.wildcard.org", "fourth-example.wildcard.org", 200,
                              V1),
                 _misdirected("fourth-example.wildcard.org", "fith-example.wildcard.org", 421),
                 _misdirected("unknown-example.org", "example.org", 200, V1),
                 _misdirected("unknown-example.org", "unknown-example.org", 404),
             )),
    ),
)

def _https(host: str, status: int, backend: str = "") -> ExpectedResponse:
    return ExpectedResponse(request=Request(host=host, path="/"),
                            response=Response(status_code=status), backend=backend,
                            namespace=NS, server_name=host, server_certificate=_SERVER_CERT)

HTTPS_LISTENER = Case(
    short_name="HTTPRouteHTTPSListener",
    description="HTTPRoute attaches to a Gateway's HTTPS listener in the same namespace",
    features=("Gateway", "HTTPRoute"),
    manifests=("tests/httproute-https-listener.yaml",),
    source="httproute-https-listener.go",
    steps=(
        step(accepted("HTTPRoute", _HTTPS, _route("httproute-https-test"),
                      _route("httproute-https-test-no-hostname")),
             resolved("HTTPRoute", _route("httproute-https-test"), _HTTPS),
             resolved("HTTPRoute", _route("httproute-https-test-no-hostname"), _HTTPS),
             gateway=_HTTPS, scheme="https", requests=(
                 _https("example.org", 200, V1),
                 _https("unknown-example.org", 404),
                 _https("second-example.org", 200, V2),
             )),
    ),
)

_HOSTNAME_MATCHING = (NS, "httproute-listener-hostname-matching")

_LISTENER_HOSTNAME_MATCHING_REQUESTS = (
    ExpectedResponse(request=Request(host="bar.com", path="/"), backend=V1, namespace=NS),
    ExpectedResponse(request=Request(host="foo.bar.com", path="/"), backend=V2, namespace=NS),
    ExpectedResponse(request=Request(host="baz.bar.com", path="/"), backend=V3, namespace=NS),
    ExpectedResponse(request=Request(host="boo.bar.com", path="/"), backend=V3, namespace=NS),
    ExpectedResponse(
        request=Request(host="multiple.prefixes.bar.com", path="/"),
        backend=V3,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(host="multiple.prefixes.foo.com", path="/"),
        backend=V3,
        namespace=NS,
    ),
    ExpectedResponse(
        request=Request(host="foo.com", path="/"),
        response=Response(status_code=404),
    ),
    ExpectedResponse(
        request=Request(host="no.matching.host", path="/"),
        response=Response(status_code=404),
    ),
)

LISTENER_HOSTNAME_MATCHING = Case(
    short_name="HTTPRouteListenerHostnameMatching",
    description="Multiple HTTP listeners with the same port and different hostnames, each "
    "with a different HTTPRoute",
    features=("Gateway", "HTTPRoute"),
    manifests=("tests/httproute-listener-hostname-matching.yaml",),
    source="httproute-listener-hostname-matching.go",
    steps=(
        step(accepted("HTTPRoute", _HOSTNAME_MATCHING, _route("backend-v1"),
                      listeners=("listener-1",)),
             resolved("HTTPRoute", _route("backend-v1"), _HOSTNAME_MATCHING),
             accepted("HTTPRoute", _HOSTNAME_MATCHING, _route("backend-v2"),
                      listeners=("listener-2",)),
             resolved("HTTPRoute", _route("backend-v2"), _HOSTNAME_MATCHING),
             accepted("HTTPRoute", _HOSTNAME_MATCHING, _route("backend-v3"),
                      listeners=("listener-3", "listener-4")),
             resolved("HTTPRoute", _route("backend-v3"), _HOSTNAME_MATCHING),
             namespaces_ready=(NS,),
             gateway=_HOSTNAME_MATCHING, listener="listener-3",
             requests=_LISTENER_HOSTNAME_MATCHING_REQUESTS),
    ),
)

_PORT_MATCHING = (NS, "httproute-listener-port-matching")

LISTENER_PORT_MATCHING = Case(
    short_name="HTTPRouteListenerPortMatching",
    description="Multiple HTTP listeners with different ports, each with a different HTTPRoute",
    features=("Gateway", "HTTPRoute", "HTTPRouteParentRefPort"),
    manifests=("tests/httproute-listener-port-matching.yaml",),
    source="httproute-listener-port-matching.go",
    steps=(
        step(accepted("HTTPRoute", _PORT_MATCHING, _route("backend-v1"),
                      listeners=("listener-1",)),
             resolved("HTTPRoute", _route("backend-v1"), _PORT_MATCHING),
             accepted("HTTPRoute", _PORT_MATCHING, _route("backend-v2"),
                      listeners=("listener-2",)),
             resolved("HTTPRoute", _route("backend-v2"), _PORT_MATCHING),
             accepted("HTTPRoute", _PORT_MATCHING, _route("backend-v3"),
                      listeners=("listener-4",)),
             resolved("HTTPRoute", _route("backend-v3"), _PORT_MATCHING),
             namespaces_ready=(NS,)),
        # Go sends each request to the listener named by the port in its Host header: none
        # to listener-1's address, 8080 to listener-2's, 8090 to listener-4's.
        step(gateway=_PORT_MATCHING, listener="listener-1", requests=(
            ExpectedResponse(request=Request(host="foo.com", path="/"), backend=V1, namespace=NS),
        )),
        step(gateway=_PORT_MATCHING, listener="listener-2", requests=(
            ExpectedResponse(request=Request(host="foo.com:8080", path="/"), backend=V2,
                             namespace=NS),
            ExpectedResponse(request=Request(host="bar.com:8080", path="/"), backend=V2,
                             namespace=NS),
        )),
        step(gateway=_PORT_MATCHING, listener="listener-4", requests=(
            ExpectedResponse(request=Request(host="foo.com:8090", path="/"), backend=V3,
                             namespace=NS),
            ExpectedResponse(request=Request(host="bar.com:8090", path="/"),
                             response=Response(status_code=404)),
        )),
    ),
)

_ALL_NAMESPACES = (NS, "all-namespaces")

MULTIPLE_GATEWAYS = Case(
    short_name="HTTPRouteMultipleGateways",
    description="An HTTPRoute that is attached to multiple Gateways receives traffic from each "
    "Gateway independently, and shared routes are accessible via all parent Gateways while "
    "dedicated routes are only accessible via their respective parent.",
    features=("Gateway", "HTTPRoute"),
    manifests=("tests/httproute-multiple-gateways.yaml",),
    source="httproute-multiple-gateways.go",
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, _route("multiple-gateways-shared-route"),
                      _route("same-namespace-dedicated-route")),
             gateway=SAME_NAMESPACE, requests=(
                 ExpectedResponse(
                    request=Request(path="/shared"),
                    response=Response(status_code=200),
                    backend=V1,
                    namespace=INFRA_NS,
                ),
                 ExpectedResponse(
                    request=Request(path="/"),
                    response=Response(status_code=200),
                    backend=V2,
                    namespace=INFRA_NS,
                ),
             )),
        step(accepted("HTTPRoute", _ALL_NAMESPACES, _route("multiple-gateways-shared-route"),
                      _route("all-namespaces-dedicated-route")),
             gateway=_ALL_NAMESPACES, requests=(
                 ExpectedResponse(
                    request=Request(path="/shared"),
                    response=Response(status_code=200),
                    backend=V1,
                    namespace=INFRA_NS,
                ),
                 ExpectedResponse(
                    request=Request(path="/"),
                    response=Response(status_code=200),
                    backend=V3,
                    namespace=INFRA_NS,
                ),
             )),
    ),
)

SERVICE_TYPES = Case(
    short_name="HTTPRouteServiceTypes",
    description="A single HTTPRoute should be able to route traffic to various service type "
    "backends",
    features=("Gateway", "HTTPRoute"),
    manifests=("tests/httproute-service-types.yaml",),
    source="httproute-service-types.go",
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, _route("service-types")),
             resolved("HTTPRoute", _route("service-types"), SAME_NAMESPACE)),
        # Services without a selector get the EndpointSlices the test fills in from the
        # infra-backend-v1 pods; "headless" keeps its managed ones.
        step(EndpointSlicesFromPods((NS, V1), ("manual-endpointslices",
                                               "headless-manual-endpointslices")),
             gateway=SAME_NAMESPACE, requests=tuple(
                 ExpectedResponse(request=Request(path=f"/{path}"),
                                  response=Response(status_code=200), backend=V1, namespace=NS)
                 for path in ("manual-endpointslices", "headless-manual-endpointslices",
                              "headless"))),
    ),
)

SIMPLE_SAME_NAMESPACE = Case(
    short_name="HTTPRouteSimpleSameNamespace",
    description="A single HTTPRoute in the gateway-conformance-infra namespace attaches to a "
    "Gateway in the same namespace",
    features=("Gateway", "HTTPRoute"),
    manifests=("tests/httproute-simple-same-namespace.yaml",),
    source="httproute-simple-same-namespace.go",
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, _route("gateway-conformance-infra-test")),
             resolved("HTTPRoute", _route("gateway-conformance-infra-test"), SAME_NAMESPACE),
             gateway=SAME_NAMESPACE, requests=(
                 ExpectedResponse(request=Request(path="/"), response=Response(status_code=200),
                                  backend=V1, namespace=NS),
             )),
    ),
)

WEIGHT = Case(
    short_name="HTTPRouteWeight",
    description="An HTTPRoute with weighted backends",
    features=("Gateway", "HTTPRoute"),
    manifests=("tests/httproute-weight.yaml",),
    source="httproute-weight.go",
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, _route("weighted-backends")),
             resolved("HTTPRoute", _route("weighted-backends"), SAME_NAMESPACE),
             gateway=SAME_NAMESPACE,
             requests=(ExpectedResponse(request=Request(path="/"),
                                        response=Response(status_codes=(200,)), namespace=NS),),
             weights={V1: 0.7, V2: 0.3, V3: 0.0}),
    ),
)


CASES: tuple[Case, ...] = (
    BACKEND_PROTOCOL_H2C,
    BACKEND_PROTOCOL_WEBSOCKET,
    CROSS_NAMESPACE,
    HOSTNAME_INTERSECTION,
    HTTPS_LISTENER_DETECT_MISDIRECTED_REQUESTS,
    HTTPS_LISTENER,
    LISTENER_HOSTNAME_MATCHING,
    LISTENER_PORT_MATCHING,
    MULTIPLE_GATEWAYS,
    SERVICE_TYPES,
    SIMPLE_SAME_NAMESPACE,
    WEIGHT,
)
