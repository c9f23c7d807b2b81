"""TCPRoute tests (``tests/tcproute-*.go``)."""

from __future__ import annotations

from ..model import (
    INFRA_NS,
    WEB_BACKEND_NS,
    Case,
    Condition,
    Create,
    GatewayMustBe,
    Step,
    TCPEcho,
    TCPExpectedResponse,
)
from .checks import ROUTE_ACCEPTED, accepted, parent_status, route_has, step

NS = INFRA_NS


def _route(name: str) -> tuple[str, str]:
    return (NS, name)


INVALID_BACKEND_REF_NONEXISTENT = Case(
    short_name="TCPRouteInvalidBackendRefNonexistent",
    description="A TCPRoute should set ResolvedRefs=False with reason BackendNotFound when its "
    "backendRef points to a Service that does not exist.",
    features=("Gateway", "TCPRoute"),
    manifests=("tests/tcproute-invalid-backendref-nonexistent.yaml",),
    source="tcproute-invalid-backendref-nonexistent.go",
    provisional=True,
    steps=(
        step(namespaces_ready=(NS,)),
        step(route_has("TCPRoute", _route("tcp-route-invalid-backend-ref-nonexistent"),
                       (NS, "tcp-gateway-invalid-backend"),
                       Condition("ResolvedRefs", "False", "BackendNotFound"))),
    ),
)

_CROSS_NS_GATEWAY = (NS, "tcp-invalid-cross-namespace-backend-ref-gateway")
_CROSS_NS_ROUTE = _route("tcp-invalid-cross-namespace-backend-ref")

INVALID_CROSS_NAMESPACE_BACKEND_REF = Case(
    short_name="TCPRouteInvalidCrossNamespaceBackendRef",
    description="A TCPRoute in the gateway-conformance-infra namespace with a backendRef in the "
    "gateway-conformance-web-backend namespace and no matching ReferenceGrant should set "
    "ResolvedRefs=False with reason RefNotPermitted.",
    features=("Gateway", "TCPRoute", "ReferenceGrant"),
    manifests=("tests/tcproute-invalid-cross-namespace-backend-ref.yaml",),
    source="tcproute-invalid-cross-namespace-backend-ref.go",
    provisional=True,
    steps=(
        step(accepted("TCPRoute", _CROSS_NS_GATEWAY, _CROSS_NS_ROUTE, listeners=("tcp",)),
             namespaces_ready=(NS, WEB_BACKEND_NS)),
        step(route_has("TCPRoute", _CROSS_NS_ROUTE, _CROSS_NS_GATEWAY,
                       Condition("ResolvedRefs", "False", "RefNotPermitted"))),
    ),
)

_MIXED = (NS, "tcp-mixed-protocol-gateway")

INVALID_NON_TCP_LISTENER = Case(
    short_name="TCPRouteInvalidNonTCPListener",
    description="A TCPRoute should set Accepted=False with reason NotAllowedByListeners when "
    "attaching to a non-TCP listener via sectionName.",
    features=("Gateway", "TCPRoute"),
    manifests=("tests/tcproute-invalid-non-tcp-listener.yaml",),
    source="tcproute-invalid-non-tcp-listener.go",
    provisional=True,
    steps=(
        step(namespaces_ready=(NS,)),
        step(route_has("TCPRoute", _route("tcp-route"), _MIXED,
                       Condition("Accepted", "False", "NotAllowedByListeners"))),
        step(GatewayMustBe(_MIXED, zero_routes=True)),
    ),
)

_ATTACH = (NS, "tcp-multi-route-attach-gateway")
_OLDER = _route("tcproute-attach-older")
_NEWER = _route("tcproute-attach-newer")

MULTIPLE_ROUTES_ATTACHMENT = Case(
    short_name="TCPRouteMultipleRoutesAttachment",
    description="When two TCPRoutes target the same Gateway listener, both must report "
    "Accepted=True. Only the oldest route is attached to the listener, and the listener's "
    "AttachedRoutes count must reflect this.",
    features=("Gateway", "TCPRoute"),
    manifests=("tests/tcproute-multiple-routes-attachment.yaml",),
    source="tcproute-multiple-routes-attachment.go",
    steps=(
        step(accepted("TCPRoute", _ATTACH, _OLDER, listeners=("tcp",)), namespaces_ready=(NS,)),
        # a second route to the same listener, made a second later
        step(Create("gateway.networking.k8s.io/v1alpha2", "TCPRoute", _NEWER, {"spec": {
                 "parentRefs": [{"name": _ATTACH[1], "sectionName": "tcp"}],
                 "rules": [{"backendRefs": [{"name": "tcp-attach-backend-2", "port": 3000}]}],
             }}),
             pause=1.0),
        step(route_has("TCPRoute", _OLDER, _ATTACH, ROUTE_ACCEPTED),
             route_has("TCPRoute", _NEWER, _ATTACH, ROUTE_ACCEPTED)),
        step(GatewayMustBe(_ATTACH, listeners={
            "tcp": (2, (Condition("Accepted", "True", "Accepted"),), ("TCPRoute",))})),
        # only the older route carries traffic
        step(gateway=_ATTACH, listener="tcp", scheme="tcp", requests=(
            TCPExpectedResponse(backend="tcp-attach-backend-1", namespace=NS),
            TCPEcho(times=100, pod_prefix="tcp-attach-backend-1-"),
        )),
    ),
)

_ATTACH_ALL = (NS, "tcp-attach-all-gateway")

PARENT_REF_ATTACH_ALL = Case(
    short_name="TCPRouteParentRefAttachAll",
    description="A TCPRoute whose parentRef sets neither sectionName nor port should attach to "
    "every TCP listener on the Gateway, and traffic to each listener should reach the "
    "configured backend.",
    features=("Gateway", "TCPRoute"),
    manifests=("tests/tcproute-parentref-attach-all.yaml",),
    source="tcproute-parentref-attach-all.go",
    provisional=True,
    steps=(
        step(namespaces_ready=(NS,)),
        step(parent_status("TCPRoute", _route("tcp-route-attach-all"), _ATTACH_ALL,
                           ROUTE_ACCEPTED, namespace_required=False)),
        *(step(GatewayMustBe(_ATTACH_ALL, address=True),
               gateway=_ATTACH_ALL, listener=listener, scheme="tcp",
               requests=(TCPExpectedResponse(backend="tcp-echo-attach-all", namespace=NS),))
          for listener in ("one", "two", "three", "four")),
    ),
)

_MULTI_LISTENER = (NS, "tcp-multi-listener-gateway")


def _by(route: str, listener: str, backend: str) -> Step:
    return step(parent_status("TCPRoute", _route(route), _MULTI_LISTENER, ROUTE_ACCEPTED,
                              namespace_required=False),
                GatewayMustBe(_MULTI_LISTENER, address=True),
                gateway=_MULTI_LISTENER, listener=listener, scheme="tcp",
                requests=(TCPExpectedResponse(backend=backend, namespace=NS),))


PARENT_REF_PORT_AND_SECTION_NAME = Case(
    short_name="TCPRouteParentRefPortAndSectionName",
    description="A TCPRoute attaches to a TCP listener by port, by sectionName, or by both.",
    features=("Gateway", "TCPRoute"),
    manifests=("tests/tcproute-parentref-port-and-section-name.yaml",),
    source="tcproute-parentref-port-and-section-name.go",
    provisional=True,
    steps=(
        step(namespaces_ready=(NS,)),
        _by("tcp-route-by-port", "one", "tcp-echo-one"),
        _by("tcp-route-by-section", "two", "tcp-echo-two"),
        _by("tcp-route-by-section-and-port", "three", "tcp-echo-three"),
    ),
)

_GRANT_GATEWAY = (NS, "tcp-reference-grant-gateway")

REFERENCE_GRANT = Case(
    short_name="TCPRouteReferenceGrant",
    description="A single TCPRoute in the gateway-conformance-infra namespace, with a backendRef "
    "in the gateway-conformance-web-backend namespace, should attach to a Gateway in the "
    "gateway-conformance-infra namespace when a ReferenceGrant in the backend namespace "
    "permits the reference.",
    features=("Gateway", "TCPRoute", "ReferenceGrant"),
    manifests=("tests/tcproute-reference-grant.yaml",),
    source="tcproute-reference-grant.go",
    provisional=True,
    steps=(
        step(accepted("TCPRoute", _GRANT_GATEWAY, _route("tcp-reference-grant"),
                      listeners=("tcp",)),
             namespaces_ready=(NS, WEB_BACKEND_NS),
             gateway=_GRANT_GATEWAY, listener="tcp", scheme="tcp", requests=(
                 TCPExpectedResponse(backend="tcp-reference-grant-backend",
                                     namespace=WEB_BACKEND_NS),
             )),
        # without the grant the reference no longer resolves
        step(route_has("TCPRoute", _route("tcp-reference-grant"), _GRANT_GATEWAY,
                       Condition("ResolvedRefs", "False", "RefNotPermitted")),
             delete=((WEB_BACKEND_NS, "tcp-reference-grant"),), delete_kind="ReferenceGrant"),
    ),
)

_WEIGHTED = (NS, "tcp-weighted-gateway")

WEIGHTED_ROUTING = Case(
    short_name="TCPRouteWeightedRouting",
    description="A TCPRoute with multiple weighted backends should distribute TCP traffic "
    "across the backends in proportion to the configured weights, and a backend with weight 0 "
    "should receive no traffic.",
    features=("Gateway", "TCPRoute"),
    manifests=("tests/tcproute-weighted-routing.yaml",),
    source="tcproute-weighted-routing.go",
    provisional=True,
    steps=(
        step(accepted("TCPRoute", _WEIGHTED, _route("tcp-weighted-route"), listeners=("tcp",)),
             namespaces_ready=(NS,)),
        # the distribution is measured with single echo exchanges (tcp.EchoSendOnce)
        step(gateway=_WEIGHTED, listener="tcp", scheme="tcp",
             requests=(TCPEcho(connect_only=True), TCPEcho()),
             weights={"tcp-backend-v1": 0.7, "tcp-backend-v2": 0.3, "tcp-backend-v3": 0.0}),
    ),
)

CASES: tuple[Case, ...] = (
    INVALID_BACKEND_REF_NONEXISTENT,
    INVALID_CROSS_NAMESPACE_BACKEND_REF,
    INVALID_NON_TCP_LISTENER,
    MULTIPLE_ROUTES_ATTACHMENT,
    PARENT_REF_ATTACH_ALL,
    PARENT_REF_PORT_AND_SECTION_NAME,
    REFERENCE_GRANT,
    WEIGHTED_ROUTING,
)
