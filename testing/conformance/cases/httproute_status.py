"""HTTPRoute tests of route status: invalid parents and backends, ReferenceGrants and
observedGeneration (``tests/httproute-*.go``)."""

from __future__ import annotations

from ..model import (
    APP_BACKEND_NS,
    INFRA_NS,
    WEB_BACKEND_NS,
    Case,
    Condition,
    ExpectedResponse,
    GatewayMustBe,
    GenerationObserved,
    Patch,
    PatchOp,
    Request,
    Response,
    Step,
)
from .checks import accepted, not_accepted, resolved, route_has, step

NS = INFRA_NS
SAME_NAMESPACE = (NS, "same-namespace")
V1 = "infra-backend-v1"
V2 = "infra-backend-v2"


def _route(name: str) -> tuple[str, str]:
    return (NS, name)


def _unattached_steps(route: tuple[str, str], gateway: tuple[str, str], reason: str
                      ) -> tuple[Step, ...]:
    """A route that does not attach: Accepted False for this reason, no accepted parent, no
    route counted on the Gateway (three subtests in Go)."""
    return (
        step(route_has("HTTPRoute", route, gateway, Condition("Accepted", "False", reason))),
        step(not_accepted("HTTPRoute", route)),
        step(GatewayMustBe(gateway, zero_routes=True)),
    )


DISALLOWED_KIND = Case(
    short_name="HTTPRouteDisallowedKind",
    description="A single HTTPRoute in the gateway-conformance-infra namespace should fail to "
    "attach to a Gateway with no listeners that allow the HTTPRoute kind",
    features=("Gateway", "HTTPRoute", "TLSRoute"),
    manifests=("tests/httproute-disallowed-kind.yaml",),
    source="httproute-disallowed-kind.go",
    steps=(
        step(resolved("HTTPRoute", _route("disallowed-kind"), (NS, "tlsroutes-only")),
             namespaces_ready=(NS,)),
        *_unattached_steps(_route("disallowed-kind"), (NS, "tlsroutes-only"),
                           "NotAllowedByListeners"),
    ),
)


def _broken_backend_case(short_name: str, description: str, features: tuple[str, ...],
                         name: str, route: str, reason: str,
                         requests: tuple[ExpectedResponse, ...]) -> Case:
    """An accepted route whose backend reference does not resolve, then requests to it."""
    return Case(
        short_name=short_name,
        description=description,
        features=features,
        manifests=(f"tests/{name}.yaml",),
        source=f"{name}.go",
        steps=(
            step(accepted("HTTPRoute", SAME_NAMESPACE, _route(route))),
            step(route_has("HTTPRoute", _route(route), SAME_NAMESPACE,
                           Condition("ResolvedRefs", "False", reason))),
            *(step(gateway=SAME_NAMESPACE, requests=(request,)) for request in requests),
        ),
    )


_SERVER_ERROR = Response(status_code=500)

INVALID_BACKEND_REF_UNKNOWN_KIND = _broken_backend_case(
    "HTTPRouteInvalidBackendRefUnknownKind",
    "A single HTTPRoute in the gateway-conformance-infra namespace should set a ResolvedRefs "
    "status False with reason InvalidKind when attempting to bind to a Gateway in the same "
    "namespace if the route has a BackendRef that points to an unknown Kind.",
    ("Gateway", "HTTPRoute"),
    "httproute-invalid-backendref-unknown-kind", "invalid-backend-ref-unknown-kind",
    "InvalidKind",
    (ExpectedResponse(request=Request(method="GET", path="/v2"), response=_SERVER_ERROR),))

INVALID_CROSS_NAMESPACE_BACKEND_REF = _broken_backend_case(
    "HTTPRouteInvalidCrossNamespaceBackendRef",
    "A single HTTPRoute in the gateway-conformance-infra namespace should set a ResolvedRefs "
    "status False with reason RefNotPermitted when attempting to bind to a Gateway in the same "
    "namespace if the route has a BackendRef Service in the gateway-conformance-web-backend "
    "namespace and a ReferenceGrant granting permission to route to that Service does not exist",
    ("Gateway", "HTTPRoute", "ReferenceGrant"),
    "httproute-invalid-cross-namespace-backend-ref", "invalid-cross-namespace-backend-ref",
    "RefNotPermitted",
    (ExpectedResponse(request=Request(method="GET", path="/"), response=_SERVER_ERROR),))

INVALID_CROSS_NAMESPACE_PARENT_REF = Case(
    short_name="HTTPRouteInvalidCrossNamespaceParentRef",
    description="A single HTTPRoute in the gateway-conformance-web-backend namespace should "
    "fail to attach to a Gateway in another namespace that it is not allowed to",
    features=("Gateway", "HTTPRoute"),
    manifests=("tests/httproute-invalid-cross-namespace-parent-ref.yaml",),
    source="httproute-invalid-cross-namespace-parent-ref.go",
    steps=(
        step(resolved("HTTPRoute", (WEB_BACKEND_NS, "invalid-cross-namespace-parent-ref"),
                      SAME_NAMESPACE)),
        *_unattached_steps((WEB_BACKEND_NS, "invalid-cross-namespace-parent-ref"),
                           SAME_NAMESPACE, "NotAllowedByListeners"),
    ),
)

INVALID_NONEXISTENT_BACKEND_REF = _broken_backend_case(
    "HTTPRouteInvalidNonExistentBackendRef",
    "A single HTTPRoute in the gateway-conformance-infra namespace should set a ResolvedRefs "
    "status False with reason BackendNotFound and return 500 when binding to a Gateway in the "
    "same namespace if the route has a BackendRef Service that does not exist",
    ("Gateway", "HTTPRoute"),
    "httproute-invalid-nonexistent-backendref", "invalid-nonexistent-backend-ref",
    "BackendNotFound",
    (ExpectedResponse(request=Request(method="GET", path="/"), response=_SERVER_ERROR),))

INVALID_PARENT_REF_NOT_MATCHING_LISTENER_PORT = Case(
    short_name="HTTPRouteInvalidParentRefNotMatchingListenerPort",
    description="A single HTTPRoute in the gateway-conformance-infra namespace should set the "
    "Accepted status to False with reason NoMatchingParent when attempting to bind to a "
    "Gateway that does not have a matching ListenerPort.",
    features=("Gateway", "HTTPRoute", "HTTPRouteDestinationPortMatching"),
    manifests=("tests/httproute-invalid-parentref-not-matching-listener-port.yaml",),
    source="httproute-invalid-parentref-not-matching-listener-port.go",
    steps=(
        step(resolved("HTTPRoute", _route("httproute-listener-not-matching-route-port"),
                      SAME_NAMESPACE)),
        *_unattached_steps(_route("httproute-listener-not-matching-route-port"), SAME_NAMESPACE,
                           "NoMatchingParent"),
    ),
)

INVALID_PARENT_REF_NOT_MATCHING_SECTION_NAME = Case(
    short_name="HTTPRouteInvalidParentRefNotMatchingSectionName",
    description="A single HTTPRoute in the gateway-conformance-infra namespace should set the "
    "Accepted status to False with reason NoMatchingParent when attempting to bind to a "
    "Gateway that does not have a matching SectionName.",
    features=("Gateway", "HTTPRoute"),
    manifests=("tests/httproute-invalid-parentref-not-matching-section-name.yaml",),
    source="httproute-invalid-parentref-not-matching-section-name.go",
    steps=_unattached_steps(_route("httproute-listener-not-matching-section-name"),
                            SAME_NAMESPACE, "NoMatchingParent"),
)

INVALID_PARENT_REF_SECTION_NAME_NOT_MATCHING_PORT = Case(
    short_name="HTTPRouteInvalidParentRefSectionNameNotMatchingPort",
    description="A single HTTPRoute in the gateway-conformance-infra namespace should set the "
    "Accepted status to False with reason NoMatchingParent when attempting to bind to a "
    "Gateway that SectionName does not match Port value.",
    features=("Gateway", "HTTPRoute", "HTTPRouteParentRefPort"),
    manifests=("tests/httproute-invalid-parentref-section-name-not-matching-port.yaml",),
    source="httproute-invalid-parentref-section-name-not-matching-port.go",
    steps=_unattached_steps(
        _route("httproute-listener-section-name-not-matching-port"),
        (NS, "gateway-with-one-not-matching-port-and-section-name-route"), "NoMatchingParent"),
)

INVALID_REFERENCE_GRANT = _broken_backend_case(
    "HTTPRouteInvalidReferenceGrant",
    "A single HTTPRoute in the gateway-conformance-infra namespace, with a backendRef in "
    "another namespace without valid ReferenceGrant, should have the ResolvedRefs condition "
    "set to False and not forward HTTP requests to any backend",
    ("Gateway", "HTTPRoute", "ReferenceGrant"),
    "httproute-invalid-reference-grant", "reference-grant", "RefNotPermitted",
    # Go names the backend, but only compares it on a 200 or 204.
    (ExpectedResponse(request=Request(method="GET", path="/"), response=_SERVER_ERROR,
                      backend="web-backend", namespace=WEB_BACKEND_NS),))

_BUMP = _route("observed-generation-bump")

OBSERVED_GENERATION_BUMP = Case(
    short_name="HTTPRouteObservedGenerationBump",
    description="A HTTPRoute in the gateway-conformance-infra namespace should update the "
    "observedGeneration in all of it's Status.Conditions after an update to the spec",
    features=("Gateway", "HTTPRoute"),
    manifests=("tests/httproute-observed-generation-bump.yaml",),
    source="httproute-observed-generation-bump.go",
    steps=(
        step(GenerationObserved("HTTPRoute", _BUMP), namespaces_ready=(NS,)),
        step(Patch("HTTPRoute", _BUMP,
                   (PatchOp("replace", "/spec/rules/0/backendRefs/0/name", V2),)),
             route_has("HTTPRoute", _BUMP, SAME_NAMESPACE, Condition("Accepted", "True")),
             resolved("HTTPRoute", _BUMP, SAME_NAMESPACE),
             GenerationObserved("HTTPRoute", _BUMP, changed=True)),
    ),
)

NO_BACKEND_REFS = Case(
    short_name="HTTPRouteNoBackendRefs",
    description="HTTPRoute rules with omitted or empty backendRefs explicitly respond with 500",
    features=("Gateway", "HTTPRoute"),
    manifests=("tests/httproute-omitted-backendrefs.yaml",),
    source="httproute-omitted-backendrefs.go",
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, _route("omitted-backendrefs")),
             resolved("HTTPRoute", _route("omitted-backendrefs"), SAME_NAMESPACE),
             gateway=SAME_NAMESPACE, requests=(
                 ExpectedResponse(request=Request(path="/forward"), backend=V1, namespace=NS),
                 ExpectedResponse(request=Request(path="/omitted-no-forward"),
                                  response=_SERVER_ERROR),
                 ExpectedResponse(request=Request(path="/empty-no-forward"),
                                  response=_SERVER_ERROR),
             )),
    ),
)

PARTIALLY_INVALID_VIA_INVALID_REFERENCE_GRANT = Case(
    short_name="HTTPRoutePartiallyInvalidViaInvalidReferenceGrant",
    description="A single HTTPRoute in the gateway-conformance-infra namespace should attach to "
    "a Gateway in the same namespace if the route has a backendRef Service in the "
    "gateway-conformance-app-backend namespace and a ReferenceGrant exists but does not grant "
    "permission to route to that specific Service",
    features=("Gateway", "HTTPRoute", "ReferenceGrant"),
    manifests=("tests/httproute-partially-invalid-via-invalid-reference-grant.yaml",),
    source="httproute-partially-invalid-via-invalid-reference-grant.go",
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, _route("invalid-reference-grant"))),
        step(route_has("HTTPRoute", _route("invalid-reference-grant"), SAME_NAMESPACE,
                       Condition("ResolvedRefs", "False", "RefNotPermitted"))),
        step(gateway=SAME_NAMESPACE, requests=(
            ExpectedResponse(request=Request(method="GET", path="/v2"), response=_SERVER_ERROR),
        )),
        step(gateway=SAME_NAMESPACE, requests=(
            ExpectedResponse(request=Request(method="GET", path="/"),
                             response=Response(status_code=200), backend="app-backend-v1",
                             namespace=APP_BACKEND_NS),
        )),
    ),
)

REFERENCE_GRANT = Case(
    short_name="HTTPRouteReferenceGrant",
    description="A single HTTPRoute in the gateway-conformance-infra namespace, with a "
    "backendRef in the gateway-conformance-web-backend namespace, should attach to Gateway in "
    "the gateway-conformance-infra namespace",
    features=("Gateway", "HTTPRoute", "ReferenceGrant"),
    manifests=("tests/httproute-reference-grant.yaml",),
    source="httproute-reference-grant.go",
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, _route("reference-grant")),
             resolved("HTTPRoute", _route("reference-grant"), SAME_NAMESPACE),
             gateway=SAME_NAMESPACE, requests=(
                 ExpectedResponse(request=Request(method="GET", path="/"),
                                  response=Response(status_code=200), backend="web-backend",
                                  namespace=WEB_BACKEND_NS),
             )),
        # once the grant is gone the backend is no longer reachable
        Step(delete=((WEB_BACKEND_NS, "reference-grant"),), delete_kind="ReferenceGrant",
             gateway=SAME_NAMESPACE, requests=(
                 ExpectedResponse(request=Request(method="GET", path="/"),
                                  response=_SERVER_ERROR),
             )),
    ),
)

CASES: tuple[Case, ...] = (
    DISALLOWED_KIND,
    INVALID_BACKEND_REF_UNKNOWN_KIND,
    INVALID_CROSS_NAMESPACE_BACKEND_REF,
    INVALID_CROSS_NAMESPACE_PARENT_REF,
    INVALID_NONEXISTENT_BACKEND_REF,
    INVALID_PARENT_REF_NOT_MATCHING_LISTENER_PORT,
    INVALID_PARENT_REF_NOT_MATCHING_SECTION_NAME,
    INVALID_PARENT_REF_SECTION_NAME_NOT_MATCHING_PORT,
    INVALID_REFERENCE_GRANT,
    OBSERVED_GENERATION_BUMP,
    NO_BACKEND_REFS,
    PARTIALLY_INVALID_VIA_INVALID_REFERENCE_GRANT,
    REFERENCE_GRANT,
)
