"""The suite's composite helpers (``utils/kubernetes``) spelled out as model checks;
``step()``, which files checks into the Step fields they belong to; and
``single_route_case()`` and ``mesh_case()``, the shapes most HTTPRoute and mesh tests share.

A Go helper such as ``GatewayAndHTTPRoutesMustBeAccepted`` checks several things at once;
``accepted()`` returns each of them as a model object so a case states every condition
the helper waits for.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..model import (
    CONDITION,
    GATEWAY_GROUP,
    INFRA_NS,
    MESH_NS,
    PARENT,
    Case,
    Condition,
    Create,
    EndpointSlicesFromPods,
    ExpectedResponse,
    GatewayClassMustBe,
    GatewayMustBe,
    GenerationObserved,
    InfrastructureLabelled,
    ListenerSetMustBe,
    Patch,
    PolicyMustBe,
    Ref,
    RouteMustBe,
    RouteNotAccepted,
    Step,
)

# Route parent conditions the helpers use.
ROUTE_ACCEPTED = Condition("Accepted", "True", "Accepted")
ROUTE_RESOLVED = Condition("ResolvedRefs", "True", "ResolvedRefs")
ROUTE_BACKEND_NOT_FOUND = Condition("ResolvedRefs", "False", "BackendNotFound")

# What RoutesAndParentMustBeAccepted wants of every listener of the parent (any reason);
# ListenerSet tests build the same list (generateAcceptedListenerConditions).
LISTENER_READY = (
    Condition("ResolvedRefs", "True"),
    Condition("Accepted", "True"),
    Condition("Programmed", "True"),
)
# The listener conditions most GatewayStatusMustHaveListeners calls expect.
LISTENER_ACCEPTED_RESOLVED = (Condition("Accepted", "True"), Condition("ResolvedRefs", "True"))

POLICY_ACCEPTED = Condition("Accepted", "True", "Accepted")
POLICY_RESOLVED = Condition("ResolvedRefs", "True", "ResolvedRefs")


def accepted(kind: str, gateway: Ref, *routes: Ref, listeners: tuple[str, ...] = ("",),
             ready_listeners: bool = True) -> tuple[Any, ...]:
    """``GatewayAndRoutesMustBeAccepted`` (and its HTTP/TCP/UDP/TLS forms): the Gateway has
    an address; each route has a parent status for it, per named listener, Accepted by the
    suite's controller; every listener is ResolvedRefs, Accepted and Programmed.
    ``ready_listeners=False`` is ``GatewayAndTLSRoutesMustBeAccepted``, which skips the
    listener check."""
    checks: list[Any] = [GatewayMustBe(gateway, address=True)]
    checks += parents_accepted(kind, gateway, *routes, listeners=listeners)
    if ready_listeners:
        checks.append(GatewayMustBe(gateway, listener_conditions=LISTENER_READY))
    return tuple(checks)


def parents_accepted(kind: str, parent: Ref, *routes: Ref, listeners: tuple[str, ...] = ("",),
                     parent_kind: str = "Gateway") -> tuple[RouteMustBe, ...]:
    """The route half of ``RoutesAndParentMustBeAccepted``: one expected parent status per
    listener name, matched by controller, group, kind, name and (for a route in another
    namespace) namespace."""
    return tuple(
        RouteMustBe(kind, route, parent, (ROUTE_ACCEPTED,), section_name=listener,
                    parent_kind=parent_kind, match=PARENT,
                    namespace_required=route[0] != parent[0])
        for route in routes for listener in listeners)


def listener_set_accepted(kind: str, listener_set: Ref, *routes: Ref) -> tuple[Any, ...]:
    """``RoutesAndParentMustBeAccepted`` with a ListenerSet parent."""
    return (*parents_accepted(kind, listener_set, *routes, parent_kind="ListenerSet"),
            ListenerSetMustBe(listener_set, listener_conditions=LISTENER_READY))


def route_has(kind: str, route: Ref, parent: Ref, *conditions: Condition,
              parent_kind: str = "Gateway") -> tuple[RouteMustBe, ...]:
    """``<Kind>RouteMustHaveCondition``, once per condition."""
    return tuple(RouteMustBe(kind, route, parent, (condition,), parent_kind=parent_kind,
                             match=CONDITION) for condition in conditions)


def resolved(kind: str, route: Ref, parent: Ref) -> tuple[RouteMustBe, ...]:
    """``<Kind>RouteMustHaveResolvedRefsConditionsTrue``."""
    return route_has(kind, route, parent, ROUTE_RESOLVED)


def not_accepted(kind: str, route: Ref) -> RouteNotAccepted:
    return RouteNotAccepted(kind, route)


def policy_has(policy: Ref, gateway: Ref, *conditions: Condition) -> tuple[PolicyMustBe, ...]:
    """``BackendTLSPolicyMustHaveCondition``, once per condition."""
    return tuple(PolicyMustBe(policy, gateway, condition) for condition in conditions)


def parent_status(kind: str, route: Ref, parent: Ref, *conditions: Condition,
                  namespace_required: bool, section_name: str = "",
                  parent_kind: str = "Gateway") -> RouteMustBe:
    """One expected parent of ``<Kind>RouteMustHaveParents``."""
    return RouteMustBe(kind, route, parent, tuple(conditions), section_name=section_name,
                       parent_kind=parent_kind, match=PARENT,
                       namespace_required=namespace_required, parent_group=GATEWAY_GROUP)


_FIELDS: tuple[tuple[type, str], ...] = (
    (GatewayMustBe, "gateways"),
    (RouteMustBe, "routes"),
    (RouteNotAccepted, "routes"),
    (ListenerSetMustBe, "listener_sets"),
    (PolicyMustBe, "policies"),
    (GenerationObserved, "generations"),
    (GatewayClassMustBe, "gateway_classes"),
    (InfrastructureLabelled, "infrastructure"),
    (Patch, "patch"),
    (EndpointSlicesFromPods, "patch"),
    (Create, "create"),
)


def _flatten(items: Iterable[Any]) -> Iterable[Any]:
    for item in items:
        if isinstance(item, tuple | list):
            yield from _flatten(item)
        else:
            yield item


def step(*checks: Any, **fields: Any) -> Step:
    """A Step whose status checks and changes are given in Go's order; each lands in the
    field of its type, keeping that order."""
    sorted_fields: dict[str, list[Any]] = {}
    for check in _flatten(checks):
        for cls, name in _FIELDS:
            if isinstance(check, cls):
                sorted_fields.setdefault(name, []).append(check)
                break
        else:
            raise TypeError(f"not a check: {check!r}")
    for name, values in sorted_fields.items():
        fields[name] = (*fields.get(name, ()), *values)
    return Step(**fields)


def single_route_case(short_name: str, description: str, features: tuple[str, ...],
                      name: str, route: str, requests: tuple[ExpectedResponse, ...], *,
                      provisional: bool = False, check_resolved: bool = True) -> Case:
    """A test of ``tests/<name>.go`` whose one HTTPRoute (in gateway-conformance-infra) is
    on the Gateway ``same-namespace``: the route accepted (and, unless told otherwise, its
    references resolved), then the requests."""
    gateway = (INFRA_NS, "same-namespace")
    checks: list[Any] = [accepted("HTTPRoute", gateway, (INFRA_NS, route))]
    if check_resolved:
        checks.append(resolved("HTTPRoute", (INFRA_NS, route), gateway))
    return Case(
        short_name=short_name,
        description=description,
        features=features,
        manifests=(f"tests/{name}.yaml",),
        source=f"{name}.go",
        provisional=provisional,
        steps=(step(*checks, gateway=gateway, requests=requests),),
    )


# echo.ConnectToApp: the first pod with these labels in the mesh namespace
ECHO_V1: Ref = (MESH_NS, "app=echo,version=v1")
ECHO_V2: Ref = (MESH_NS, "app=echo,version=v2")


def mesh_case(short_name: str, description: str, features: tuple[str, ...], name: str,
              requests: tuple[ExpectedResponse, ...], *, provisional: bool = False,
              manifests: tuple[str, ...] | None = None) -> Case:
    """A test of ``tests/mesh/<name>.go`` that sends its requests from the v1 echo pod."""
    return Case(
        short_name=short_name,
        description=description,
        features=features,
        manifests=(f"tests/mesh/{name}.yaml",) if manifests is None else manifests,
        source=f"mesh/{name}.go",
        provisional=provisional,
        steps=(Step(client=ECHO_V1, requests=requests),),
    )
