"""GRPCRoute tests through a Gateway (``tests/grpcroute-*.go``)."""

from __future__ import annotations

from ..model import INFRA_NS, Case, GRPCExpectedResponse
from .checks import accepted, step

NS = INFRA_NS
SAME_NAMESPACE = (NS, "same-namespace")
V1 = "grpc-infra-backend-v1"
V2 = "grpc-infra-backend-v2"
V3 = "grpc-infra-backend-v3"
UNIMPLEMENTED = "Unimplemented"
# The authority the header-modifier test sends: the echo service's full name.
ECHO_SERVICE = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"

EXACT_METHOD_MATCHING = Case(
    short_name="GRPCExactMethodMatching",
    description="A single GRPCRoute with exact method matching for different backends",
    features=("Gateway", "GRPCRoute"),
    manifests=("tests/grpcroute-exact-method-matching.yaml",),
    source="grpcroute-exact-method-matching.go",
    steps=(
        step(accepted("GRPCRoute", SAME_NAMESPACE, (NS, "exact-matching")),
             gateway=SAME_NAMESPACE, scheme="grpc", requests=(
                 GRPCExpectedResponse(method="Echo", backend=V1, namespace=NS),
                 GRPCExpectedResponse(method="EchoTwo", backend=V2, namespace=NS),
                 GRPCExpectedResponse(method="EchoThree", code=UNIMPLEMENTED),
             )),
    ),
)

HEADER_MATCHING = Case(
    short_name="GRPCRouteHeaderMatching",
    description="A single GRPCRoute with header matching for different backends",
    features=("Gateway", "GRPCRoute"),
    manifests=("tests/grpcroute-header-matching.yaml",),
    source="grpcroute-header-matching.go",
    steps=(
        step(accepted("GRPCRoute", SAME_NAMESPACE, (NS, "grpc-header-matching")),
             gateway=SAME_NAMESPACE, scheme="grpc", requests=(
                 GRPCExpectedResponse(method="Echo", metadata={"Version": "one"}, backend=V1,
                                      namespace=NS),
                 GRPCExpectedResponse(method="Echo", metadata={"Version": "two"}, backend=V2,
                                      namespace=NS),
                 GRPCExpectedResponse(method="Echo", metadata={"Version": "two", "Color": "orange"},
                                      backend=V1, namespace=NS),
                 GRPCExpectedResponse(method="Echo", metadata={"Version": "two", "Color": "blue"},
                                      backend=V2, namespace=NS),
                 GRPCExpectedResponse(method="Echo", metadata={"Color": "orange"},
                                      code=UNIMPLEMENTED),
                 GRPCExpectedResponse(method="Echo", metadata={"Some-Other-Header": "one"},
                                      code=UNIMPLEMENTED),
                 GRPCExpectedResponse(method="Echo", metadata={"Color": "blue"}, backend=V1,
                                      namespace=NS),
                 GRPCExpectedResponse(method="Echo", metadata={"Color": "green"}, backend=V1,
                                      namespace=NS),
                 GRPCExpectedResponse(method="Echo", metadata={"Color": "red"}, backend=V2,
                                      namespace=NS),
                 GRPCExpectedResponse(method="Echo", metadata={"Color": "yellow"}, backend=V2,
                                      namespace=NS),
                 GRPCExpectedResponse(method="Echo", metadata={"Color": "purple"},
                                      code=UNIMPLEMENTED),
             )),
    ),
)

_HOSTNAMES = (NS, "grpcroute-listener-hostname-matching")

LISTENER_HOSTNAME_MATCHING = Case(
    short_name="GRPCRouteListenerHostnameMatching",
    description="Multiple GRPC listeners with the same port and different hostnames, each with "
    "a different GRPCRoute",
    features=("Gateway", "GRPCRoute"),
    manifests=("tests/grpcroute-listener-hostname-matching.yaml",),
    source="grpcroute-listener-hostname-matching.go",
    steps=(
        step(accepted("GRPCRoute", _HOSTNAMES, (NS, "backend-v1"), listeners=("listener-1",)),
             accepted("GRPCRoute", _HOSTNAMES, (NS, "backend-v2"), listeners=("listener-2",)),
             accepted("GRPCRoute", _HOSTNAMES, (NS, "backend-v3"),
                      listeners=("listener-3", "listener-4")),
             namespaces_ready=(NS,),
             gateway=_HOSTNAMES, listener="listener-3", scheme="grpc", requests=(
                 GRPCExpectedResponse(method="Echo", authority="bar.com", backend=V1,
                                      namespace=NS),
                 GRPCExpectedResponse(method="Echo", authority="foo.bar.com", backend=V2,
                                      namespace=NS),
                 GRPCExpectedResponse(method="Echo", authority="baz.bar.com", backend=V3,
                                      namespace=NS),
                 GRPCExpectedResponse(method="Echo", authority="boo.bar.com", backend=V3,
                                      namespace=NS),
                 GRPCExpectedResponse(method="Echo", authority="multiple.prefixes.bar.com",
                                      backend=V3, namespace=NS),
                 GRPCExpectedResponse(method="Echo", authority="multiple.prefixes.foo.com",
                                      backend=V3, namespace=NS),
                 GRPCExpectedResponse(method="Echo", authority="foo.com", code=UNIMPLEMENTED),
                 GRPCExpectedResponse(method="Echo", authority="no.matching.host",
                                      code=UNIMPLEMENTED),
             )),
    ),
)

NAMED_RULE = Case(
    short_name="GRPCRouteNamedRule",
    description="A GRPCRoute with a named GRPCRouteRule",
    features=("Gateway", "GRPCRoute", "GRPCRouteNamedRouteRule"),
    manifests=("tests/grpcroute-named-rule.yaml",),
    source="grpcroute-named-rule.go",
    provisional=True,
    steps=(
        step(accepted("GRPCRoute", SAME_NAMESPACE, (NS, "grpc-named-rules")),
             gateway=SAME_NAMESPACE, scheme="grpc", requests=(
                 GRPCExpectedResponse(method="Echo", backend=V1, namespace=NS),
                 GRPCExpectedResponse(method="EchoTwo", backend=V2, namespace=NS),
             )),
    ),
)

REQUEST_HEADER_MODIFIER = Case(
    short_name="GRPCRouteRequestHeaderModifier",
    description="A GRPCRoute with RequestHeaderModifier filter should modify request headers",
    features=("Gateway", "GRPCRoute", "GRPCRouteRequestHeaderModifier"),
    manifests=("tests/grpcroute-request-header-modifier.yaml",),
    source="grpcroute-request-header-modifier.go",
    steps=(
        step(accepted("GRPCRoute", SAME_NAMESPACE, (NS, "grpc-request-header-modifier")),
             gateway=SAME_NAMESPACE, scheme="grpc", requests=(
                 GRPCExpectedResponse(
                     method="Echo",
                     test_case_name="Set headers -- X-Header-Set should have the original value",
                     authority=ECHO_SERVICE,
                     metadata={"Some-Other-Header": "this-header-should-be-set"},
                     response_headers={"Some-Other-Header": ("this-header-should-be-set",),
                                       "X-Header-Set": ("set-overwrites-values",)},
                     backend=V1, namespace=NS),
                 GRPCExpectedResponse(
                     method="Echo",
                     test_case_name="Set headers -- X-Header-Set should get overwritten with the "
                     "original value",
                     authority=ECHO_SERVICE,
                     metadata={"Some-Other-Header": "this-header-should-be-set",
                               "X-Header-Set": "this-value-should-be-overwritten"},
                     response_headers={"Some-Other-Header": ("this-header-should-be-set",),
                                       "X-Header-Set": ("set-overwrites-values",)},
                     backend=V1, namespace=NS),
                 GRPCExpectedResponse(
                     method="Echo",
                     test_case_name="Add headers -- X-Header-Add should have the original value",
                     authority=ECHO_SERVICE,
                     metadata={"Some-Other-Header": "this-header-should-be-set"},
                     response_headers={"Some-Other-Header": ("this-header-should-be-set",),
                                       "X-Header-Add": ("add-appends-values",)},
                     backend=V1, namespace=NS),
                 GRPCExpectedResponse(
                     method="Echo",
                     test_case_name="Add headers -- X-Header-Add should append the new value to "
                     "the original value",
                     authority=ECHO_SERVICE,
                     metadata={"Some-Other-Header": "this-header-should-be-set",
                               "X-Header-Add": "this-value-should-be-appended"},
                     response_headers={"Some-Other-Header": ("this-header-should-be-set",),
                                       "X-Header-Add": ("this-value-should-be-appended",
                                                        "add-appends-values")},
                     backend=V1, namespace=NS),
                 GRPCExpectedResponse(
                     method="Echo",
                     test_case_name="Remove headers -- X-Header-Remove should be removed",
                     authority=ECHO_SERVICE,
                     metadata={"X-Header-Remove": "this-should-be-removed"},
                     response_headers={},
                     backend=V1, namespace=NS),
                 GRPCExpectedResponse(
                     method="EchoTwo",
                     test_case_name="Multiple operations - all header operations should be "
                     "applied",
                     authority=ECHO_SERVICE,
                     metadata={"X-Header-Set-2": "set-header-2",
                               "X-Header-Add-2": "add-header-2",
                               "X-Header-Remove-2": "should-be-removed-2",
                               "Some-Other-Header": "another-header-val"},
                     response_headers={"X-Header-Set-1": ("header-set-1",),
                                       "X-Header-Set-2": ("header-set-2",),
                                       "X-Header-Add-1": ("header-add-1",),
                                       "X-Header-Add-2": ("header-add-1,add-header-2",),
                                       "Some-Other-Header": ("another-header-val",)},
                     backend=V2, namespace=NS),
                 GRPCExpectedResponse(
                     method="EchoTwo",
                     test_case_name="Case sensitivity check for header names",
                     authority=ECHO_SERVICE,
                     # the filter names headers canonically, the request in lower case
                     metadata={"x-header-set-1": "original-set-1",
                               "x-header-add-1": "existing-add-1",
                               "x-header-remove-1": "should-be-removed-1"},
                     response_headers={"X-Header-Set-1": ("set-overwrites-values",),
                                       "X-Header-Set-2": ("header-set-2",),
                                       "X-Header-Add-1": ("existing-add-1", "add-appends-values"),
                                       "X-Header-Add-2": ("header-add-2",)},
                     backend=V2, namespace=NS),
             )),
    ),
)

WEIGHT = Case(
    short_name="GRPCRouteWeight",
    description="A GRPCRoute with weighted backends",
    features=("Gateway", "GRPCRoute"),
    manifests=("tests/grpcroute-weight.yaml",),
    source="grpcroute-weight.go",
    steps=(
        step(accepted("GRPCRoute", SAME_NAMESPACE, (NS, "weighted-backends")),
             gateway=SAME_NAMESPACE, scheme="grpc",
             requests=(GRPCExpectedResponse(method="Echo", code="OK", namespace=NS),),
             weights={V1: 0.7, V2: 0.3, V3: 0.0}),
    ),
)

# In file-name order, as the Go files register them.
CASES: tuple[Case, ...] = (
    EXACT_METHOD_MATCHING,
    HEADER_MATCHING,
    LISTENER_HOSTNAME_MATCHING,
    NAMED_RULE,
    REQUEST_HEADER_MODIFIER,
    WEIGHT,
)
