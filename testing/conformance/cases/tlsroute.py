"""TLSRoute tests (``tests/tlsroute-*.go``).

Where Go takes a server name from the TLSRoute's ``spec.hostnames`` (after checking there
is exactly one), the case states that hostname from the manifest.
"""

from __future__ import annotations

from ..model import (
    INFRA_NS,
    Case,
    Condition,
    ExpectedResponse,
    GatewayMustBe,
    Request,
    Step,
    TCPExpectedResponse,
    TLSConnectionRejected,
)
from .checks import accepted, not_accepted, resolved, route_has, step

NS = INFRA_NS
TLS_ROUTE = ("TLSRoute",)
CA = (NS, "tls-checks-ca-certificate")


def _route(name: str) -> tuple[str, str]:
    return (NS, name)


_CERT = (NS, "tls-checks-certificate")


def _https(host: str, backend: str) -> ExpectedResponse:
    """A request through a passthrough listener to a TLS backend, trusting its certificate."""
    return ExpectedResponse(request=Request(host=host, path="/"), backend=backend,
                            namespace=NS, server_name=host, server_certificate=_CERT)


def _intersection(gateway: str, routes: tuple[str, ...],
                  *exchanges: ExpectedResponse | TLSConnectionRejected) -> tuple[Step, ...]:
    gw = _route(gateway)
    return (
        step(accepted("TLSRoute", gw, *(_route(r) for r in routes), ready_listeners=False),
             *(resolved("TLSRoute", _route(r), gw) for r in routes)),
        # Go sends these in parallel subtests.
        *(Step(gateway=gw, requests=(exchange,),
               scheme="tls" if isinstance(exchange, TLSConnectionRejected) else "https")
          for exchange in exchanges),
    )


HOSTNAME_INTERSECTION = Case(
    short_name="TLSRouteHostnameIntersection",
    description="TLSRoutes should attach to listeners only if they have intersecting hostnames, "
    "and should accept requests only for the intersecting hostnames",
    features=("Gateway", "TLSRoute"),
    manifests=("tests/tlsroute-hostname-intersection.yaml",),
    source="tlsroute-hostname-intersection.go",
    steps=(
        step(namespaces_ready=(NS,)),
        # exact listener hostname
        *_intersection("gw-tlsroute-exact-hostname-x-1",
                       ("tlsroute-more-specific-wc-hostname-x-1",),
                       _https("abc.example.com", "tls-backend"),
                       TLSConnectionRejected("non.matching.com")),
        # more specific wildcard listener hostname
        *_intersection("gw-tlsroute-more-specific-wc-hostname-x-2",
                       ("tlsroute-exact-hostname-x-2", "tlsroute-less-specific-wc-hostname-x-2"),
                       _https("abc.example.com", "tls-backend"),
                       _https("other.example.com", "tls-backend-2"),
                       TLSConnectionRejected("non.matching.com")),
        # less specific wildcard listener hostname
        *_intersection("gw-tlsroute-less-specific-wc-hostname-x-3",
                       ("tlsroute-exact-hostname-x-3", "tlsroute-more-specific-wc-hostname-x-3"),
                       _https("abc.example.com", "tls-backend"),
                       _https("other.example.com", "tls-backend-2"),
                       TLSConnectionRejected("non.matching.com")),
        # empty listener hostname
        *_intersection("gw-tlsroute-empty-hostname-x-4",
                       ("tlsroute-exact-hostname-x-4", "tlsroute-less-specific-wc-hostname-x-4"),
                       _https("abc.example.com", "tls-backend"),
                       _https("other.example.com", "tls-backend-2"),
                       TLSConnectionRejected("non.matching.org")),
    ),
)


def _invalid_backend_case(short_name: str, description: str, name: str, gateway: str,
                          reason: str) -> Case:
    gw = _route(gateway)
    route = _route("invalid-backend-ref-" + name.rsplit("backendref-", 1)[1])
    return Case(
        short_name=short_name,
        description=description,
        features=("Gateway", "TLSRoute"),
        manifests=(f"tests/{name}.yaml",),
        source=f"{name}.go",
        steps=(
            step(accepted("TLSRoute", gw, route, ready_listeners=False), namespaces_ready=(NS,)),
            step(route_has("TLSRoute", route, gw, Condition("ResolvedRefs", "False", reason))),
            # the route's only hostname
            Step(gateway=gw, scheme="tls", requests=(TLSConnectionRejected("example.com"),)),
        ),
    )


INVALID_BACKEND_REF_NONEXISTENT = _invalid_backend_case(
    "TLSRouteInvalidBackendRefNonexistent",
    "A single TLSRoute in the gateway-conformance-infra namespace has a ResolvedRefs status "
    "False with reason BackendNotFound when binding to a Gateway in the same namespace, if the "
    "route has a BackendRef Service that does not exist",
    "tlsroute-invalid-backendref-nonexistent",
    "gateway-tlsroute-invalid-backend-ref-nonexistent", "BackendNotFound")

INVALID_BACKEND_REF_UNKNOWN_KIND = _invalid_backend_case(
    "TLSRouteInvalidBackendRefUnknownKind",
    "A single TLSRoute in the gateway-conformance-infra namespace should set a ResolvedRefs "
    "status False with reason InvalidKind when attempting to bind to a Gateway in the same "
    "namespace if the route has a BackendRef that points to an unknown Kind.",
    "tlsroute-invalid-backendref-unknown-kind",
    "gateway-tlsroute-invalid-backend-ref-unknown-kind", "InvalidKind")

_EXACT = _route("gateway-tls-exact-hostname")
_WILDCARD = _route("gateway-tls-wildcard-hostname")
_MISMATCH_1 = _route("tlsroute-hostname-mismatch-1")
_MISMATCH_2 = _route("tlsroute-hostname-mismatch-2")
_NO_LISTENER_HOSTNAME = Condition("Accepted", "False", "NoMatchingListenerHostname")

INVALID_NO_MATCHING_LISTENER_HOSTNAME = Case(
    short_name="TLSRouteInvalidNoMatchingListenerHostname",
    description="A TLSRoute with a hostname that does not match the Gateway listener hostname "
    "should set Accepted=False with Reason=NoMatchingListenerHostname",
    features=("Gateway", "TLSRoute"),
    manifests=("tests/tlsroute-invalid-no-matching-listener-hostname.yaml",),
    source="tlsroute-invalid-no-matching-listener-hostname.go",
    steps=(
        step(namespaces_ready=(NS,)),
        step(route_has("TLSRoute", _MISMATCH_1, _EXACT, _NO_LISTENER_HOSTNAME)),
        step(route_has("TLSRoute", _MISMATCH_2, _WILDCARD, _NO_LISTENER_HOSTNAME)),
        step(not_accepted("TLSRoute", _MISMATCH_1)),
        step(not_accepted("TLSRoute", _MISMATCH_2)),
        step(GatewayMustBe(_EXACT, zero_routes=True)),
        step(GatewayMustBe(_WILDCARD, zero_routes=True)),
    ),
)

_VIA_HTTP = _route("tlsroute-not-allowed-protocol-http")
_VIA_HTTPS = _route("tlsroute-not-allowed-protocol-https")
_NO_SECTION = _route("tlsroute-no-matching-section-name")
_HTTP_ONLY = _route("gateway-tlsroute-http-only")
_HTTPS_ONLY = _route("gateway-tlsroute-https-only")
_NOT_ALLOWED = Condition("Accepted", "False", "NotAllowedByListeners")

INVALID_NO_MATCHING_LISTENER = Case(
    short_name="TLSRouteInvalidNoMatchingListener",
    description="A TLSRoute should set Accepted=False when attaching to a Gateway with no "
    "compatible TLS listener",
    features=("Gateway", "TLSRoute"),
    manifests=("tests/tlsroute-invalid-no-matching-listener.yaml",),
    source="tlsroute-invalid-no-matching-listener.go",
    steps=(
        step(namespaces_ready=(NS,)),
        step(route_has("TLSRoute", _VIA_HTTP, _HTTP_ONLY, _NOT_ALLOWED)),
        step(route_has("TLSRoute", _VIA_HTTPS, _HTTPS_ONLY, _NOT_ALLOWED)),
        step(route_has("TLSRoute", _NO_SECTION, _route("gateway-tlsroute-tls-passthrough-only"),
                       Condition("Accepted", "False", "NoMatchingParent"))),
        step(not_accepted("TLSRoute", _VIA_HTTP)),
        step(not_accepted("TLSRoute", _VIA_HTTPS)),
        step(not_accepted("TLSRoute", _NO_SECTION)),
        step(GatewayMustBe(_HTTP_ONLY, zero_routes=True)),
        step(GatewayMustBe(_HTTPS_ONLY, zero_routes=True)),
    ),
)

_GRANT_GATEWAY = _route("gateway-tlsroute-referencegrant")

INVALID_REFERENCE_GRANT = Case(
    short_name="TLSRouteInvalidReferenceGrant",
    description="A single TLSRoute in the gateway-conformance-infra namespace, with a backendRef "
    "in another namespace without valid ReferenceGrant, should have the ResolvedRefs condition "
    "set to False",
    features=("Gateway", "TLSRoute", "ReferenceGrant"),
    manifests=("tests/tlsroute-invalid-reference-grant.yaml",),
    source="tlsroute-invalid-reference-grant.go",
    steps=(
        step(accepted("TLSRoute", _GRANT_GATEWAY, _route("gateway-conformance-infra-test"),
                      ready_listeners=False)),
        step(route_has("TLSRoute", _route("gateway-conformance-infra-test"), _GRANT_GATEWAY,
                       Condition("ResolvedRefs", "False", "RefNotPermitted"))),
    ),
)

_PROTOCOL_CONFLICT = (Condition("Accepted", "False", "ProtocolConflict"),)

LISTENER_MIXED_TERMINATION_NOT_SUPPORTED = Case(
    short_name="TLSRouteListenerMixedTerminationNotSupported",
    description="When TLSRoute mixed termination/passthrough listener is NOT supported, a "
    "Gateway Listener with 2 distinct TLS modes on the same port MUST have Accepted=False with "
    "Reason=ProtocolConflict",
    features=("Gateway", "TLSRoute", "TLSRouteModeTerminate"),
    manifests=("tests/tlsroute-listener-mixed-termination-not-supported.yaml",),
    source="tlsroute-listener-mixed-termination-not-supported.go",
    returns_if_supported=("TLSRouteModeMixed",),
    steps=(
        step(GatewayMustBe(_route("gateway-tlsroute-mixed-termination-not-supported"), listeners={
            "tls-terminate": (0, _PROTOCOL_CONFLICT, ()),
            "tls-passthrough": (0, _PROTOCOL_CONFLICT, ()),
        })),
    ),
)

LISTENER_PASSTHROUGH_SUPPORTED_KINDS = Case(
    short_name="TLSRouteListenerPassthroughSupportedKinds",
    description="A Gateway Listener with TLS mode Passthrough MUST include TLSRoute in "
    "SupportedKinds",
    features=("Gateway", "TLSRoute"),
    manifests=("tests/tlsroute-listener-passthrough-supported-kinds.yaml",),
    source="tlsroute-listener-passthrough-supported-kinds.go",
    steps=(
        step(GatewayMustBe(_route("gateway-tlsroute-passthrough-supported-kind"), listeners={
            "tls-passthrough": (0, (Condition("ResolvedRefs", "False", "InvalidRouteKinds"),),
                                TLS_ROUTE),
        })),
    ),
)

LISTENER_TERMINATE_NOT_SUPPORTED = Case(
    short_name="TLSRouteListenerTerminateNotSupported",
    description="When TLSRoute termination is NOT supported, a Gateway Listener with TLS mode "
    "Terminate MUST have Accepted=False with Reason=UnsupportedValue",
    features=("Gateway", "TLSRoute"),
    manifests=("tests/tlsroute-listener-terminate-not-supported.yaml",),
    source="tlsroute-listener-terminate-not-supported.go",
    returns_if_supported=("TLSRouteModeTerminate",),
    steps=(
        step(GatewayMustBe(_route("gateway-tlsroute-terminate-unsupported"), listeners={
            "tls-terminate": (0, (Condition("Accepted", "False", "UnsupportedValue"),), ()),
        })),
    ),
)

LISTENER_TERMINATE_SUPPORTED_KINDS = Case(
    short_name="TLSRouteListenerTerminateSupportedKinds",
    description="A Gateway Listener with TLS mode Terminate MUST include TLSRoute in "
    "SupportedKinds when termination is supported",
    features=("Gateway", "TLSRoute", "TLSRouteModeTerminate"),
    manifests=("tests/tlsroute-listener-terminate-supported-kinds.yaml",),
    source="tlsroute-listener-terminate-supported-kinds.go",
    steps=(
        step(GatewayMustBe(_route("gateway-tlsroute-terminate-supported"), listeners={
            "tls-terminate": (0, (Condition("Accepted", "True", "Accepted"),), TLS_ROUTE),
        })),
    ),
)

_MIXED = _route("gateway-tlsroute-mixed-termination")
_LISTENER_ACCEPTED = (Condition("Accepted", "True", "Accepted"),)

MIXED_TERMINATION_SAME_NAMESPACE = Case(
    short_name="TLSRouteMixedTerminationSameNamespace",
    description="A Gateway with 2 TLS Listeners on different modes, on the same port must route "
    "the traffic correctly",
    features=("Gateway", "TLSRoute", "TLSRouteModeTerminate", "TLSRouteModeMixed"),
    manifests=("tests/tlsroute-mixed-termination-same-namespace.yaml",),
    source="tlsroute-mixed-termination-same-namespace.go",
    provisional=True,
    steps=(
        step(accepted("TLSRoute", _MIXED, _route("gateway-conformance-mixed-passthroughroute"),
                      ready_listeners=False),
             GatewayMustBe(_MIXED, listeners={
                 "tls-terminate": (1, _LISTENER_ACCEPTED, TLS_ROUTE),
                 "tls-passthrough": (1, _LISTENER_ACCEPTED, TLS_ROUTE),
             }),
             accepted("TLSRoute", _MIXED, _route("gateway-conformance-mixed-terminateroute"),
                      ready_listeners=False),
             namespaces_ready=(NS,),
             # Go sends the two in parallel subtests.
             gateway=_MIXED, scheme="tls", requests=(
                 # terminated at the Gateway: plain text to the backend, no SNI there
                 TCPExpectedResponse(backend="tcp-backend", namespace=NS, backend_is_tls=False,
                                     use_tls=True, server_name="tls.example.com",
                                     ca_certificate=CA),
                 # passed through: the backend speaks TLS and sees the SNI
                 TCPExpectedResponse(backend="tcp-backend", namespace=NS, backend_is_tls=True,
                                     hostname="abc.example.com", use_tls=True,
                                     server_name="abc.example.com", ca_certificate=CA),
             )),
    ),
)

SIMPLE_SAME_NAMESPACE = Case(
    short_name="TLSRouteSimpleSameNamespace",
    description="A single TLSRoute in the gateway-conformance-infra namespace attaches to a "
    "Gateway in the same namespace",
    features=("Gateway", "TLSRoute"),
    manifests=("tests/tlsroute-simple-same-namespace.yaml",),
    source="tlsroute-simple-same-namespace.go",
    steps=(
        step(accepted("TLSRoute", _route("gateway-tlsroute"),
                      _route("gateway-conformance-infra-test"), ready_listeners=False),
             namespaces_ready=(NS,),
             gateway=_route("gateway-tlsroute"), scheme="tls", requests=(
                 # passthrough: the backend speaks TLS and sees the SNI
                 TCPExpectedResponse(backend="tcp-backend", namespace=NS, backend_is_tls=True,
                                     hostname="abc.example.com", use_tls=True,
                                     server_name="abc.example.com", ca_certificate=CA),
             )),
    ),
)

TERMINATE_SIMPLE_SAME_NAMESPACE = Case(
    short_name="TLSRouteTerminateSimpleSameNamespace",
    description="A single TLSRoute in the gateway-conformance-infra namespace attaches to a "
    "Gateway using Terminate mode in the same namespace",
    features=("Gateway", "TLSRoute", "TLSRouteModeTerminate"),
    manifests=("tests/tlsroute-terminate-simple-same-namespace.yaml",),
    source="tlsroute-terminate-simple-same-namespace.go",
    provisional=True,
    steps=(
        step(accepted("TLSRoute", _route("gateway-tlsroute-terminate"),
                      _route("tlsroute-terminated-test"), ready_listeners=False),
             namespaces_ready=(NS,),
             gateway=_route("gateway-tlsroute-terminate"), scheme="tls", requests=(
                 # terminated at the Gateway: plain text to the backend, no SNI there
                 TCPExpectedResponse(backend="tcp-backend", namespace=NS, backend_is_tls=False,
                                     use_tls=True, server_name="tls.example.com",
                                     ca_certificate=CA),
             )),
    ),
)

CASES: tuple[Case, ...] = (
    HOSTNAME_INTERSECTION,
    INVALID_BACKEND_REF_NONEXISTENT,
    INVALID_BACKEND_REF_UNKNOWN_KIND,
    INVALID_NO_MATCHING_LISTENER_HOSTNAME,
    INVALID_NO_MATCHING_LISTENER,
    INVALID_REFERENCE_GRANT,
    LISTENER_MIXED_TERMINATION_NOT_SUPPORTED,
    LISTENER_PASSTHROUGH_SUPPORTED_KINDS,
    LISTENER_TERMINATE_NOT_SUPPORTED,
    LISTENER_TERMINATE_SUPPORTED_KINDS,
    MIXED_TERMINATION_SAME_NAMESPACE,
    SIMPLE_SAME_NAMESPACE,
    TERMINATE_SIMPLE_SAME_NAMESPACE,
)
