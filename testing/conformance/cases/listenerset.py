"""ListenerSet tests (``tests/listenerset-*.go``)."""

from __future__ import annotations

from ..model import (
    INFRA_NS,
    Case,
    Condition,
    ExpectedResponse,
    GatewayMustBe,
    ListenerSetMustBe,
    Ref,
    Request,
    Response,
)
from .checks import (
    LISTENER_READY,
    accepted,
    listener_set_accepted,
    parent_status,
    route_has,
    step,
)

NS = INFRA_NS
V1 = "infra-backend-v1"
V2 = "infra-backend-v2"
V3 = "infra-backend-v3"
HTTP_ROUTE = ("HTTPRoute",)
GATEWAY_ACCEPTED = (Condition("Accepted", "True"),)
LS_ACCEPTED = Condition("Accepted", "True", "Accepted")
LS_PROGRAMMED = Condition("Programmed", "True", "Programmed")
LS_NOT_ALLOWED = (Condition("Accepted", "False", "NotAllowed"),
                  Condition("Programmed", "False", "NotAllowed"))
LS_LISTENERS_NOT_VALID = (Condition("Accepted", "False", "ListenersNotValid"),
                          Condition("Programmed", "False", "ListenersNotValid"))


def _ls(listener_set: Ref, *conditions: Condition) -> tuple[ListenerSetMustBe, ...]:
    """``ListenerSetMustHaveCondition``, once per condition."""
    return tuple(ListenerSetMustBe(listener_set, conditions=(condition,))
                 for condition in conditions)


def _ls_listener(listener_set: Ref, name: str, conditions: tuple[Condition, ...] = LISTENER_READY
                 ) -> ListenerSetMustBe:
    return ListenerSetMustBe(listener_set, listener_conditions=conditions, listener_names=(name,))


def _allowed_namespace_case(short_name: str, description: str, name: str, gateway: str,
                            allowed: Ref | None, listener: str, disallowed: Ref) -> Case:
    checks: list[GatewayMustBe | ListenerSetMustBe] = [
        GatewayMustBe((NS, gateway), conditions=GATEWAY_ACCEPTED),
        GatewayMustBe((NS, gateway), attached_listener_sets=0 if allowed is None else 1)]
    if allowed is not None:
        checks += [*_ls(allowed, LS_ACCEPTED, LS_PROGRAMMED), _ls_listener(allowed, listener)]
    checks += _ls(disallowed, *LS_NOT_ALLOWED)
    return Case(
        short_name=short_name,
        description=description,
        features=("Gateway", "ListenerSet"),
        manifests=(f"tests/{name}.yaml",),
        source=f"{name}.go",
        parallel=True,
        steps=(step(*checks, namespaces_ready=(NS,)),),
    )


ALLOWED_NAMESPACE_NONE = _allowed_namespace_case(
    "ListenerSetAllowedNamespaceNone",
    "Listener Sets are not allowed on the Gateway when `allowedListeners` is set to `None`",
    "listenerset-allowed-namespace-none", "gateway-does-not-allow-listenerset", None, "",
    (NS, "listenerset-not-allowed"))

ALLOWED_NAMESPACE_SAME = _allowed_namespace_case(
    "ListenerSetAllowedNamespaceSame",
    "ListenerSets in the same namespace as the Gateway are allowed when `allowedListeners` is "
    "set to `Same`",
    "listenerset-allowed-namespace-same", "gateway-allows-listenerset-in-same-namespace",
    (NS, "listenerset-in-same-namespace"), "listenerset-in-same-namespace-listener",
    ("gateway-api-listenerset-not-allowed-ns", "listenerset-in-different-namespace"))

ALLOWED_NAMESPACE_SELECTOR = _allowed_namespace_case(
    "ListenerSetAllowedNamespaceSelector",
    "ListenerSets in the namespaces that match the labels are allowed when `allowedListeners` "
    "is set to `Selector`",
    "listenerset-allowed-namespace-selector", "gateway-allows-listenerset-in-selected-namespace",
    ("gateway-api-listenerset-selector-allowed-ns", "listenerset-in-selected-namespace"),
    "listenerset-in-selected-namespace-listener",
    ("gateway-api-listenerset-selector-not-allowed-ns", "listenerset-not-in-selected-namespace"))

_ROUTES_GATEWAY = (NS, "gateway-with-listener-sets-test-allowed-routes")
_ROUTES_LS = (NS, "listenerset-test-allowed-routes-namespaces")
_CROSS_NS = "gateway-api-ls-cross-ns"
_CROSS_LS = (_CROSS_NS, "listenerset-test-allowed-routes-cross-ns")

ALLOWED_ROUTES_NAMESPACES = Case(
    short_name="ListenerSetAllowedRoutesNamespaces",
    description="ListenerSet listeners allow routes from the specified namespace",
    features=("Gateway", "ListenerSet", "HTTPRoute", "ReferenceGrant"),
    manifests=("tests/listenerset-allowed-routes-namespaces.yaml",),
    source="listenerset-allowed-routes-namespaces.go",
    parallel=True,
    steps=(
        step(GatewayMustBe(_ROUTES_GATEWAY, address=True),
             GatewayMustBe(_ROUTES_GATEWAY, conditions=GATEWAY_ACCEPTED),
             GatewayMustBe(_ROUTES_GATEWAY, attached_listener_sets=2),
             namespaces_ready=(NS,)),
        # a ListenerSet in the Gateway's namespace
        step(listener_set_accepted("HTTPRoute", _ROUTES_LS,
                                   (NS, "route-in-same-namespace"),
                                   ("gateway-api-routes-allowed-ns", "route-in-selected-namespace"),
                                   ("gateway-api-routes-not-allowed-ns",
                                    "route-not-in-selected-namespace")),
             ListenerSetMustBe(_ROUTES_LS, listeners={
                 "listener-set-listener-allowed-routes-all": (3, LISTENER_READY, HTTP_ROUTE),
                 "listener-set-listener-allowed-routes-same": (1, LISTENER_READY, HTTP_ROUTE),
                 "listener-set-listener-allowed-routes-selector": (1, LISTENER_READY, HTTP_ROUTE),
             }),
             gateway=_ROUTES_GATEWAY, listener="gateway-listener",
             requests=(
                ExpectedResponse(
                    request=Request(
                        host="listener-set-listener-allowed-routes-all.com",
                        path="/route-in-same-namespace",
                    ),
                    backend=V1,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-listener-allowed-routes-all.com",
                        path="/route-in-selected-namespace",
                    ),
                    backend=V2,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-listener-allowed-routes-all.com",
                        path="/route-not-in-selected-namespace",
                    ),
                    backend=V3,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-listener-allowed-routes-same.com",
                        path="/route-in-same-namespace",
                    ),
                    backend=V1,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-listener-allowed-routes-same.com",
                        path="/route-in-selected-namespace",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-listener-allowed-routes-same.com",
                        path="/route-not-in-selected-namespace",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-listener-allowed-routes-selector.com",
                        path="/route-in-same-namespace",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-listener-allowed-routes-selector.com",
                        path="/route-in-selected-namespace",
                    ),
                    backend=V2,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-listener-allowed-routes-selector.com",
                        path="/route-not-in-selected-namespace",
                    ),
                    response=Response(status_code=404),
                ),
            )),
        # a ListenerSet in another namespace
        step(listener_set_accepted("HTTPRoute", _CROSS_LS,
                                   (_CROSS_NS, "route-in-listenerset-namespace")),
             route_has("HTTPRoute", (NS, "route-in-gateway-namespace"), _CROSS_LS,
                       Condition("Accepted", "False", "NotAllowedByListeners"),
                       parent_kind="ListenerSet"),
             ListenerSetMustBe(_CROSS_LS, listeners={
                 "listener-set-listener-allowed-routes-cross-ns-same": (1, LISTENER_READY,
                                                                        HTTP_ROUTE),
             }),
             gateway=_ROUTES_GATEWAY, listener="gateway-listener",
             requests=(
                ExpectedResponse(
                    request=Request(
                        host="listener-set-listener-allowed-routes-cross-ns-same.com",
                        path="/route-in-listenerset-namespace",
                    ),
                    backend=V1,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-listener-allowed-routes-cross-ns-same.com",
                        path="/route-in-gateway-namespace",
                    ),
                    response=Response(status_code=404),
                ),
            )),
    ),
)

ALLOWED_ROUTES_SUPPORTED_KINDS = Case(
    short_name="ListenerSetAllowedRoutesSupportedKinds",
    description="ListenerSet listeners allow specific route kinds",
    features=("Gateway", "ListenerSet", "TLSRoute"),
    manifests=("tests/listenerset-allowed-routes-supported-kinds.yaml",),
    source="listenerset-allowed-routes-supported-kinds.go",
    parallel=True,
    steps=(
        step(GatewayMustBe((NS, "gateway-with-listener-sets-test-supported-route-kinds"),
                           conditions=GATEWAY_ACCEPTED),
             _ls_listener((NS, "listenerset-test-allowed-routes-supported-kinds"),
                          "listener-set-listener-allowed-routes-tls-only",
                          (Condition("ResolvedRefs", "False", "InvalidRouteKinds"),)),
             namespaces_ready=(NS,)),
    ),
)

DEFAULT_NOT_ALLOWED = _allowed_namespace_case(
    "ListenerSetDefaultNotAllowed",
    "Listener Sets are not allowed on the Gateway by default (i.e. when `allowedListeners` is "
    "not set)",
    "listenerset-default-not-allowed", "gateway-default-does-not-allow-listenerset", None, "",
    (NS, "listenerset-default-not-allowed"))

_DUAL_GATEWAY = (NS, "gateway-dual-parentref")
_DUAL_LS = (NS, "ls-dual-parentref")

DUAL_PARENT_REF_INDEPENDENCE = Case(
    short_name="ListenerSetDualParentRefIndependence",
    description="A Route with both Gateway and ListenerSet parentRefs has independently "
    "evaluated Accepted conditions for each parentRef",
    features=("Gateway", "ListenerSet", "HTTPRoute"),
    manifests=("tests/listenerset-dual-parentref-independence.yaml",),
    source="listenerset-dual-parentref-independence.go",
    steps=(
        step(GatewayMustBe(_DUAL_GATEWAY, address=True),
             GatewayMustBe(_DUAL_GATEWAY, conditions=GATEWAY_ACCEPTED),
             GatewayMustBe(_DUAL_GATEWAY, attached_listener_sets=1),
             ListenerSetMustBe(_DUAL_LS, listeners={
                 "ls-dual-parentref-listener": (2, LISTENER_READY, HTTP_ROUTE)}),
             namespaces_ready=(NS,)),
        # both parentRefs accepted
        step(route_has("HTTPRoute", (NS, "route-dual-parentref-both"), _DUAL_GATEWAY,
                       Condition("Accepted", "True")),
             route_has("HTTPRoute", (NS, "route-dual-parentref-both"), _DUAL_LS,
                       Condition("Accepted", "True"), parent_kind="ListenerSet"),
             gateway=_DUAL_GATEWAY, listener="gw-dual-parentref-listener",
             requests=(
                ExpectedResponse(
                    request=Request(host="gw-dual.com", path="/dualboth"),
                    backend=V1,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(host="ls-dual.com", path="/dualboth"),
                    backend=V1,
                    namespace=NS,
                ),
            )),
        # one of the two accepted
        step(route_has("HTTPRoute", (NS, "route-dual-parentref-one"), _DUAL_GATEWAY,
                       Condition("Accepted", "False", "NoMatchingParent")),
             route_has("HTTPRoute", (NS, "route-dual-parentref-one"), _DUAL_LS,
                       Condition("Accepted", "True"), parent_kind="ListenerSet"),
             listener_set_accepted("HTTPRoute", _DUAL_LS, (NS, "route-dual-parentref-one")),
             gateway=_DUAL_GATEWAY, listener="gw-dual-parentref-listener",
             requests=(
                ExpectedResponse(
                    request=Request(host="ls-dual.com", path="/dualone"),
                    backend=V2,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(host="gw-dual.com", path="/dualone"),
                    response=Response(status_code=404),
                ),
            )),
    ),
)

_SECTION_GATEWAY = (NS, "gateway-section-name")
_SECTION_LS = (NS, "listenerset-section-name")

GATEWAY_PARENT_SECTION_NAME_NOT_FOUND = Case(
    short_name="ListenerSetGatewayParentSectionNameNotFound",
    description="A Route must not be able to find a ListenerSet sectionName using a Gateway "
    "parentRef",
    features=("Gateway", "ListenerSet", "HTTPRoute"),
    manifests=("tests/listenerset-gateway-parent-section-name-not-found.yaml",),
    source="listenerset-gateway-parent-section-name-not-found.go",
    steps=(
        step(GatewayMustBe(_SECTION_GATEWAY, address=True),
             GatewayMustBe(_SECTION_GATEWAY, conditions=GATEWAY_ACCEPTED),
             GatewayMustBe(_SECTION_GATEWAY, attached_listener_sets=1),
             listener_set_accepted("HTTPRoute", _SECTION_LS, (NS, "route-via-listenerset")),
             route_has("HTTPRoute", (NS, "route-via-gateway"), _SECTION_GATEWAY,
                       Condition("Accepted", "False", "NoMatchingParent")),
             namespaces_ready=(NS,),
             gateway=_SECTION_GATEWAY, listener="gw-listener", requests=(
                 ExpectedResponse(
                    request=Request(host="ls-section-name.com", path="/goodsection"),
                    backend=V1,
                    namespace=NS,
                ),
                 ExpectedResponse(
                    request=Request(host="gw-section.com", path="/badsection"),
                    response=Response(status_code=404),
                ),
             )),
    ),
)


def _conflict_case(short_name: str, description: str, conflict: str) -> Case:
    """Listener precedence: a ListenerSet listener that conflicts (by ``conflict``: hostname
    or protocol) with an earlier Gateway or ListenerSet listener loses."""
    kind = "hostname" if conflict == "HostnameConflict" else "protocol"
    name = f"listenerset-{kind}-conflict"
    gateway = (NS, f"gateway-with-listenerset-{kind}-conflict")
    conflicted = (Condition("Accepted", "False", conflict),
                  Condition("Programmed", "False", conflict),
                  Condition("Conflicted", "True", conflict))
    with_gateway_1 = (NS, f"listenerset-with-{kind}-conflict-with-gateway-1")
    with_gateway_2 = (NS, f"listenerset-with-{kind}-conflict-with-gateway-2")
    with_ls_1 = (NS, f"listenerset-with-{kind}-conflict-with-listener-set-1")
    with_ls_2 = (NS, f"listenerset-with-{kind}-conflict-with-listener-set-2")
    return Case(
        short_name=short_name,
        description=description,
        features=("Gateway", "ListenerSet"),
        manifests=(f"tests/{name}.yaml",),
        source=f"{name}.go",
        parallel=True,
        steps=(step(
            GatewayMustBe(gateway, conditions=GATEWAY_ACCEPTED),
            GatewayMustBe(gateway, listener_conditions=LISTENER_READY,
                          listener_names=("gateway-listener",)),
            GatewayMustBe(gateway, listener_conditions=LISTENER_READY,
                          listener_names=(f"{kind}-conflict-with-gateway-listener",)),
            GatewayMustBe(gateway, attached_listener_sets=2),
            _ls(with_gateway_1, Condition("Accepted", "True"), LS_PROGRAMMED),
            _ls_listener(with_gateway_1, "listener-set-1-listener"),
            _ls_listener(with_gateway_1, f"{kind}-conflict-with-gateway-listener", conflicted),
            _ls_listener(with_gateway_1, f"{kind}-conflict-with-listener-set-listener"),
            _ls(with_gateway_2, *LS_LISTENERS_NOT_VALID),
            _ls_listener(with_gateway_2, f"{kind}-conflict-with-gateway-listener", conflicted),
            _ls(with_ls_1, Condition("Accepted", "True"), LS_PROGRAMMED),
            _ls_listener(with_ls_1, "listener-set-2-listener"),
            _ls_listener(with_ls_1, f"{kind}-conflict-with-listener-set-listener", conflicted),
            _ls(with_ls_2, *LS_LISTENERS_NOT_VALID),
            _ls_listener(with_ls_2, f"{kind}-conflict-with-listener-set-listener", conflicted),
            namespaces_ready=(NS,)),),
    )


HOSTNAME_CONFLICT = _conflict_case(
    "ListenerSetHostnameConflict",
    "Validate Listener Precedence when a ListenerSet listener has a hostname conflict",
    "HostnameConflict")

_ROUTING_GATEWAY = (NS, "gateway-with-listener-sets-http-routing")
_ROUTING_LS_1 = (NS, "listener-set-http-routing-1")
_ROUTING_LS_2 = (NS, "listener-set-http-routing-2")

HTTP_ROUTING = Case(
    short_name="ListenerSetHTTPRouting",
    description="HTTP Routing works as expected with ListenerSets",
    features=("Gateway", "ListenerSet", "HTTPRoute"),
    manifests=("tests/listenerset-http-routing.yaml",),
    source="listenerset-http-routing.go",
    parallel=True,
    steps=(
        step(accepted("HTTPRoute", _ROUTING_GATEWAY, (NS, "attaches-to-all-listeners"),
                      (NS, "gateway-route"), (NS, "gateway-section-route"),
                      listeners=("gateway-listener",)),
             GatewayMustBe(_ROUTING_GATEWAY, attached_listener_sets=2),
             listener_set_accepted("HTTPRoute", _ROUTING_LS_1, (NS, "attaches-to-all-listeners"),
                                   (NS, "listener-set-http-routing-1-route"),
                                   (NS, "listener-set-http-routing-1-section-route")),
             ListenerSetMustBe(_ROUTING_LS_1, listeners={
                 "listener-set-http-routing-1-listener-1": (3, LISTENER_READY, HTTP_ROUTE),
                 "listener-set-http-routing-1-listener-2": (2, LISTENER_READY, HTTP_ROUTE),
             }),
             listener_set_accepted("HTTPRoute", _ROUTING_LS_2, (NS, "attaches-to-all-listeners"),
                                   (NS, "listener-set-http-routing-2-route")),
             ListenerSetMustBe(_ROUTING_LS_2, listeners={
                 "listener-set-http-routing-2-listener-1": (2, LISTENER_READY, HTTP_ROUTE),
                 "listener-set-http-routing-2-listener-2": (2, LISTENER_READY, HTTP_ROUTE),
             }),
             namespaces_ready=(NS,),
             gateway=_ROUTING_GATEWAY, listener="gateway-listener",
             requests=(
                ExpectedResponse(
                    request=Request(host="gateway-listener-1.com", path="/route"),
                    backend=V1,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(host="gateway-listener-2.com", path="/route"),
                    backend=V1,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-1-listener-1.com",
                        path="/route",
                    ),
                    backend=V1,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-1-listener-2.com",
                        path="/route",
                    ),
                    backend=V1,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-2-listener-1.com",
                        path="/route",
                    ),
                    backend=V1,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-2-listener-2.com",
                        path="/route",
                    ),
                    backend=V1,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(host="gateway-listener-1.com", path="/gateway-route"),
                    backend=V2,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(host="gateway-listener-2.com", path="/gateway-route"),
                    backend=V2,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-1-listener-1.com",
                        path="/gateway-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-1-listener-2.com",
                        path="/gateway-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-2-listener-1.com",
                        path="/gateway-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-2-listener-2.com",
                        path="/gateway-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(host="gateway-listener-1.com", path="/gateway-section-route"),
                    backend=V3,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(host="gateway-listener-2.com", path="/gateway-section-route"),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-1-listener-1.com",
                        path="/gateway-section-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-1-listener-2.com",
                        path="/gateway-section-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-2-listener-1.com",
                        path="/gateway-section-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-2-listener-2.com",
                        path="/gateway-section-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="gateway-listener-1.com",
                        path="/listener-set-http-routing-1-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="gateway-listener-2.com",
                        path="/listener-set-http-routing-1-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-1-listener-1.com",
                        path="/listener-set-http-routing-1-route",
                    ),
                    backend=V2,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-1-listener-2.com",
                        path="/listener-set-http-routing-1-route",
                    ),
                    backend=V2,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-2-listener-1.com",
                        path="/listener-set-http-routing-1-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-2-listener-2.com",
                        path="/listener-set-http-routing-1-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="gateway-listener-1.com",
                        path="/listener-set-http-routing-1-section-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="gateway-listener-2.com",
                        path="/listener-set-http-routing-1-section-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-1-listener-1.com",
                        path="/listener-set-http-routing-1-section-route",
                    ),
                    backend=V3,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-1-listener-2.com",
                        path="/listener-set-http-routing-1-section-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-2-listener-1.com",
                        path="/listener-set-http-routing-1-section-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-2-listener-2.com",
                        path="/listener-set-http-routing-1-section-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="gateway-listener-1.com",
                        path="/listener-set-http-routing-2-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="gateway-listener-2.com",
                        path="/listener-set-http-routing-2-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-1-listener-1.com",
                        path="/listener-set-http-routing-2-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-1-listener-2.com",
                        path="/listener-set-http-routing-2-route",
                    ),
                    response=Response(status_code=404),
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-2-listener-1.com",
                        path="/listener-set-http-routing-2-route",
                    ),
                    backend=V2,
                    namespace=NS,
                ),
                ExpectedResponse(
                    request=Request(
                        host="listener-set-http-routing-2-listener-2.com",
                        path="/listener-set-http-routing-2-route",
                    ),
                    backend=V2,
                    namespace=NS,
                ),
            )),
    ),
)

PROTOCOL_CONFLICT = _conflict_case(
    "ListenerSetProtocolConflict",
    "Validate Listener Precedence when a ListenerSet listener has a protocol conflict",
    "ProtocolConflict")

_GRANT_GATEWAY = (NS, "gateway-with-listener-sets-test-reference-grant")
_WITH_GRANT = (NS, "listenerset-with-reference-grant")
_WITHOUT_GRANT = ("gateway-api-listener-sets-test-reference-grant-ns",
                  "listenerset-without-reference-grant")

REFERENCE_GRANT = Case(
    short_name="ListenerSetReferenceGrant",
    description="ListenerSet with reference grant support",
    features=("Gateway", "ListenerSet", "ReferenceGrant"),
    manifests=("tests/listenerset-reference-grant.yaml",),
    source="listenerset-reference-grant.go",
    parallel=True,
    steps=(
        step(GatewayMustBe(_GRANT_GATEWAY, conditions=GATEWAY_ACCEPTED),
             _ls(_WITH_GRANT, Condition("Accepted", "True"), Condition("Programmed", "True")),
             _ls_listener(_WITH_GRANT, "listenerset-with-reference-grant-listener",
                          (Condition("ResolvedRefs", "True"),)),
             _ls(_WITHOUT_GRANT, *LS_LISTENERS_NOT_VALID),
             _ls_listener(_WITHOUT_GRANT, "listenerset-without-reference-grant-listener",
                          (Condition("ResolvedRefs", "False", "RefNotPermitted"),)),
             namespaces_ready=(NS,)),
    ),
)

_SCOPED_GATEWAY = (NS, "gateway-parentref")
_SCOPED_LS = (NS, "listenerset-parentref")

ROUTE_STATUS_SCOPED_TO_PARENT_REF = Case(
    short_name="ListenerSetRouteStatusScopedToParentRef",
    description="A Route's status.parents must contain entries only for its explicitly "
    "declared parentRefs",
    features=("Gateway", "ListenerSet", "HTTPRoute"),
    manifests=("tests/listenerset-route-status-scoped-to-parentref.yaml",),
    source="listenerset-route-status-scoped-to-parentref.go",
    steps=(
        step(GatewayMustBe(_SCOPED_GATEWAY, conditions=GATEWAY_ACCEPTED),
             GatewayMustBe(_SCOPED_GATEWAY, attached_listener_sets=1),
             ListenerSetMustBe(_SCOPED_LS, listeners={
                 "listenerset-parentref-listener": (1, LISTENER_READY, HTTP_ROUTE)}),
             namespaces_ready=(NS,)),
        # a route whose only parentRef is the Gateway
        step(route_has("HTTPRoute", (NS, "route-parentref-gwonly"), _SCOPED_GATEWAY,
                       Condition("Accepted", "True")),
             parent_status("HTTPRoute", (NS, "route-parentref-gwonly"), _SCOPED_GATEWAY,
                           Condition("Accepted", "True"), namespace_required=True)),
        # a route whose only parentRef is the ListenerSet
        step(listener_set_accepted("HTTPRoute", _SCOPED_LS, (NS, "route-parentref-lsonly")),
             parent_status("HTTPRoute", (NS, "route-parentref-lsonly"), _SCOPED_LS,
                           Condition("Accepted", "True"), namespace_required=True,
                           parent_kind="ListenerSet")),
    ),
)

CASES: tuple[Case, ...] = (
    ALLOWED_NAMESPACE_NONE,
    ALLOWED_NAMESPACE_SAME,
    ALLOWED_NAMESPACE_SELECTOR,
    ALLOWED_ROUTES_NAMESPACES,
    ALLOWED_ROUTES_SUPPORTED_KINDS,
    DEFAULT_NOT_ALLOWED,
    DUAL_PARENT_REF_INDEPENDENCE,
    GATEWAY_PARENT_SECTION_NAME_NOT_FOUND,
    HOSTNAME_CONFLICT,
    HTTP_ROUTING,
    PROTOCOL_CONFLICT,
    REFERENCE_GRANT,
    ROUTE_STATUS_SCOPED_TO_PARENT_REF,
)
