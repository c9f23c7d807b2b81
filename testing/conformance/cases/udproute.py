"""UDPRoute tests (``tests/udproute-*.go``)."""

from __future__ import annotations

from ..model import (
    APP_BACKEND_NS,
    INFRA_NS,
    Case,
    Condition,
    Create,
    DNSQuery,
    GatewayMustBe,
    Step,
    UDPExpectedResponse,
)
from .checks import (
    LISTENER_ACCEPTED_RESOLVED,
    ROUTE_ACCEPTED,
    ROUTE_RESOLVED,
    accepted,
    parent_status,
    route_has,
    step,
)

NS = INFRA_NS
UDP_ROUTE = ("UDPRoute",)


def _route(name: str) -> tuple[str, str]:
    return (NS, name)


INVALID_BACKEND_REF_NONEXISTENT = Case(
    short_name="UDPRouteInvalidBackendRefNonexistent",
    description="A UDPRoute should set ResolvedRefs=False with reason BackendNotFound when its "
    "backendRef points to a Service that does not exist.",
    features=("Gateway", "UDPRoute"),
    manifests=("tests/udproute-invalid-backendref-nonexistent.yaml",),
    source="udproute-invalid-backendref-nonexistent.go",
    provisional=True,
    steps=(
        step(namespaces_ready=(NS,)),
        step(route_has("UDPRoute", _route("udp-route-invalid-backend-ref-nonexistent"),
                       _route("udp-gateway-invalid-backend"),
                       Condition("ResolvedRefs", "False", "BackendNotFound"))),
    ),
)

_CROSS_NS_GATEWAY = _route("udp-gateway-invalid-cross-namespace-backend-ref")
_CROSS_NS_ROUTE = _route("udp-route-invalid-cross-namespace-backend-ref")

INVALID_CROSS_NAMESPACE_BACKEND_REF = Case(
    short_name="UDPRouteInvalidCrossNamespaceBackendRef",
    description="A UDPRoute in the gateway-conformance-infra namespace should set "
    "ResolvedRefs=False with reason RefNotPermitted when its backendRef points to a Service in "
    "the gateway-conformance-app-backend namespace and no ReferenceGrant grants permission to "
    "that Service.",
    features=("Gateway", "UDPRoute", "ReferenceGrant"),
    manifests=("tests/udproute-invalid-cross-namespace-backend-ref.yaml",),
    source="udproute-invalid-cross-namespace-backend-ref.go",
    provisional=True,
    steps=(
        step(accepted("UDPRoute", _CROSS_NS_GATEWAY, _CROSS_NS_ROUTE), namespaces_ready=(NS,)),
        step(route_has("UDPRoute", _CROSS_NS_ROUTE, _CROSS_NS_GATEWAY,
                       Condition("ResolvedRefs", "False", "RefNotPermitted"))),
    ),
)

_ATTACH = _route("udp-multi-route-attach-gateway")
_OLDER = _route("udproute-attach-older")
_NEWER = _route("udproute-attach-newer")

MULTIPLE_ROUTES_ATTACHMENT = Case(
    short_name="UDPRouteMultipleRoutesAttachment",
    description="When two UDPRoutes target the same Gateway listener, both must report "
    "Accepted=True. Only the oldest route is attached and receives traffic; the listener's "
    "AttachedRoutes count must reflect both.",
    features=("Gateway", "UDPRoute"),
    manifests=("tests/udproute-multiple-routes-attachment.yaml",),
    source="udproute-multiple-routes-attachment.go",
    provisional=True,
    steps=(
        step(accepted("UDPRoute", _ATTACH, _OLDER, listeners=("udp",)), namespaces_ready=(NS,)),
        # a second route to the same listener, made a second later
        step(Create("gateway.networking.k8s.io/v1alpha2", "UDPRoute", _NEWER, {"spec": {
                 "parentRefs": [{"name": _ATTACH[1], "sectionName": "udp"}],
                 "rules": [{"backendRefs": [{"name": "udp-attach-backend-2", "port": 8080}]}],
             }}),
             pause=1.0),
        step(route_has("UDPRoute", _OLDER, _ATTACH, ROUTE_ACCEPTED),
             route_has("UDPRoute", _NEWER, _ATTACH, ROUTE_ACCEPTED)),
        step(GatewayMustBe(_ATTACH, listeners={
            "udp": (2, (Condition("Accepted", "True", "Accepted"),), UDP_ROUTE)})),
        # only the older route carries traffic
        step(gateway=_ATTACH, listener="udp", scheme="udp", requests=(
            UDPExpectedResponse(probes=20, backend="udp-attach-backend-1"),
        )),
    ),
)

_TLS_ONLY = _route("udproute-tls-only-gateway")

NOT_ALLOWED_BY_LISTENERS = Case(
    short_name="UDPRouteNotAllowedByListeners",
    description="A UDPRoute targeting a Gateway listener whose protocol is not UDP must report "
    "Accepted=False with reason NotAllowedByListeners and must not be attached to the listener.",
    features=("Gateway", "UDPRoute"),
    manifests=("tests/udproute-not-allowed-by-listeners.yaml",),
    source="udproute-not-allowed-by-listeners.go",
    provisional=True,
    returns_unless_supported=("TLSRoute",),
    steps=(
        step(namespaces_ready=(NS,)),
        step(route_has("UDPRoute", _route("udproute-not-allowed-by-listeners"), _TLS_ONLY,
                       Condition("Accepted", "False", "NotAllowedByListeners"))),
        step(GatewayMustBe(_TLS_ONLY, zero_routes=True)),
    ),
)

_ATTACH_ALL = _route("udp-attach-all-listeners-gateway")

PARENT_REF_ATTACH_ALL_LISTENERS = Case(
    short_name="UDPRouteParentRefAttachAllListeners",
    description="A UDPRoute whose parentRef sets neither `port` nor `sectionName` attaches to "
    "every UDP listener on the Gateway, and traffic to each listener reaches the configured "
    "backend.",
    features=("Gateway", "UDPRoute"),
    manifests=("tests/udproute-parentref-attach-all-listeners.yaml",),
    source="udproute-parentref-attach-all-listeners.go",
    provisional=True,
    steps=(
        step(namespaces_ready=(NS,)),
        step(parent_status("UDPRoute", _route("udp-route-attach-all"), _ATTACH_ALL,
                           ROUTE_ACCEPTED, namespace_required=False)),
        step(GatewayMustBe(_ATTACH_ALL, listeners={
            listener: (1, LISTENER_ACCEPTED_RESOLVED, UDP_ROUTE)
            for listener in ("udp-1", "udp-2", "udp-3")})),
        *(step(GatewayMustBe(_ATTACH_ALL, address=True),
               gateway=_ATTACH_ALL, listener=listener, scheme="udp",
               requests=(UDPExpectedResponse(service="udp-echo-attach-all", namespace=NS),))
          for listener in ("udp-1", "udp-2", "udp-3")),
    ),
)

_MULTI_LISTENER = _route("udp-multi-listener-gateway")


def _by(route: str, listener: str, backend: str) -> Step:
    return step(parent_status("UDPRoute", _route(route), _MULTI_LISTENER, ROUTE_ACCEPTED,
                              namespace_required=False),
                GatewayMustBe(_MULTI_LISTENER, address=True),
                gateway=_MULTI_LISTENER, listener=listener, scheme="udp",
                requests=(UDPExpectedResponse(service=backend, namespace=NS),))


PARENT_REF_PORT_AND_SECTION_NAME = Case(
    short_name="UDPRouteParentRefPortAndSectionName",
    description="A UDPRoute attaches to a UDP listener selected by port, by sectionName, or by "
    "both, and traffic to each listener is routed to the backend Service configured by the "
    "corresponding UDPRoute.",
    features=("Gateway", "UDPRoute"),
    manifests=("tests/udproute-parentref-port-and-section-name.yaml",),
    source="udproute-parentref-port-and-section-name.go",
    provisional=True,
    steps=(
        step(namespaces_ready=(NS,)),
        _by("udp-route-by-port", "by-port", "udp-echo-by-port"),
        _by("udp-route-by-section", "by-section", "udp-echo-by-section"),
        _by("udp-route-by-section-and-port", "by-section-and-port", "udp-echo-by-section-and-port"),
    ),
)

_GRANT_GATEWAY = _route("udp-gateway-reference-grant")
_GRANT_ROUTE = _route("udp-route-reference-grant")

REFERENCE_GRANT = Case(
    short_name="UDPRouteReferenceGrant",
    description="A UDPRoute in the gateway-conformance-infra namespace, with a backendRef in the "
    "gateway-conformance-app-backend namespace, should attach to the Gateway and forward UDP "
    "traffic to the backend while a ReferenceGrant permits the cross-namespace reference.",
    features=("Gateway", "UDPRoute", "ReferenceGrant"),
    manifests=("tests/udproute-reference-grant.yaml",),
    source="udproute-reference-grant.go",
    provisional=True,
    steps=(
        step(accepted("UDPRoute", _GRANT_GATEWAY, _GRANT_ROUTE), namespaces_ready=(NS,)),
        step(route_has("UDPRoute", _GRANT_ROUTE, _GRANT_GATEWAY, ROUTE_RESOLVED)),
        step(gateway=_GRANT_GATEWAY, scheme="udp", requests=(UDPExpectedResponse(),)),
        # without the grant the reference no longer resolves
        step(route_has("UDPRoute", _GRANT_ROUTE, _GRANT_GATEWAY,
                       Condition("ResolvedRefs", "False", "RefNotPermitted")),
             delete=((APP_BACKEND_NS, "udp-reference-grant"),), delete_kind="ReferenceGrant"),
    ),
)

SIMPLE = Case(
    short_name="UDPRoute",
    description="Make sure UDPRoute is working",
    features=("UDPRoute", "Gateway"),
    manifests=("tests/udproute-simple.yaml",),
    source="udproute-simple.go",
    provisional=True,
    steps=(
        step(accepted("UDPRoute", _route("udp-gateway"), _route("udp-coredns")),
             gateway=_route("udp-gateway"), scheme="udp",
             requests=(DNSQuery("foo.bar.com.", "A"),)),
    ),
)

_WEIGHTED = _route("udp-weighted-gateway")

WEIGHTED_ROUTING = Case(
    short_name="UDPRouteWeightedRouting",
    description="A UDPRoute with multiple weighted backends should distribute UDP traffic "
    "across the backends in proportion to the configured weights, and a backend with weight 0 "
    "should not receive any traffic.",
    features=("Gateway", "UDPRoute"),
    manifests=("tests/udproute-weighted-routing.yaml",),
    source="udproute-weighted-routing.go",
    provisional=True,
    steps=(
        step(accepted("UDPRoute", _WEIGHTED, _route("udp-weighted-route"), listeners=("udp",)),
             namespaces_ready=(NS,)),
        # the distribution is measured with single datagrams whose JSON answer names the pod
        step(gateway=_WEIGHTED, listener="udp", scheme="udp",
             requests=(UDPExpectedResponse(),),
             weights={"udp-backend-v1": 0.7, "udp-backend-v2": 0.3, "udp-backend-v3": 0.0}),
    ),
)

CASES: tuple[Case, ...] = (
    INVALID_BACKEND_REF_NONEXISTENT,
    INVALID_CROSS_NAMESPACE_BACKEND_REF,
    MULTIPLE_ROUTES_ATTACHMENT,
    NOT_ALLOWED_BY_LISTENERS,
    PARENT_REF_ATTACH_ALL_LISTENERS,
    PARENT_REF_PORT_AND_SECTION_NAME,
    REFERENCE_GRANT,
    SIMPLE,
    WEIGHTED_ROUTING,
)
