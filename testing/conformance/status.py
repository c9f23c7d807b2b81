"""The suite's status checks (``utils/kubernetes/helpers.go``), sans-IO.

Each model check becomes one or more ``Wait``: what a Go helper polls for, with the timeout
and poll interval it uses. A wait's ``check`` looks at one ``Snapshot`` (the objects as the
API server holds them, their status as discovery computed it, the node's pods) and answers
None when the condition holds, or why not yet; it raises ``Fatal`` where the Go helper
fails at once (a poll function that returns an error). The runner polls; nothing here
touches a socket or a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from .apiserver import Key
from .model import (
    CONDITION,
    GATEWAY_GROUP,
    Condition,
    GatewayClassMustBe,
    GatewayMustBe,
    GenerationObserved,
    InfrastructureLabelled,
    ListenerSetMustBe,
    PolicyMustBe,
    Ref,
    RouteMustBe,
    RouteNotAccepted,
    Step,
)
from .timeouts import TimeoutConfig

GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
SKIP_READINESS = "gateway-api/skip-this-for-readiness"  # GatewayExcludedFromReadinessChecks


class Fatal(Exception):
    """The Go helper stops polling and fails the test."""


@attrs.frozen
class Pod:
    name: str
    namespace: str
    ready: bool
    ip: str = ""
    labels: Mapping[str, str] = attrs.field(factory=dict)
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    terminating: bool = False  # deleted, still stopping (Kubernetes: a deletionTimestamp)


@attrs.frozen
class Snapshot:
    """One look at the cluster: ``objects`` as written, ``statuses`` as discovery shows
    them (by the same keys), ``pods`` as the node runs them, and ``generated``: the objects
    the node made itself (a Gateway's ServiceAccount, Service) by key."""

    objects: Mapping[Key, Mapping[str, Any]] = attrs.field(factory=dict)
    statuses: Mapping[Key, Mapping[str, Any]] = attrs.field(factory=dict)
    pods: Sequence[Pod] = ()
    generated: Mapping[Key, Mapping[str, Any]] = attrs.field(factory=dict)

    def get(self, kind: str, ref: Ref) -> dict[str, Any] | None:
        """The object as ``client.Get`` returns it: spec and metadata, and its status."""
        key = (kind, *ref)
        obj = self.objects.get(key)
        if obj is None:
            return None
        return {**obj, "status": dict(self.statuses.get(key) or {})}

    def must_get(self, kind: str, ref: Ref) -> dict[str, Any]:
        found = self.get(kind, ref)
        if found is None:
            raise Fatal(f"error fetching {kind}: {ref[0]}/{ref[1]} not found")
        return found


Check = Callable[[Snapshot], "str | None"]


@attrs.frozen
class Wait:
    what: str
    timeout: float
    interval: float
    check: Check
    needs: frozenset[str] = frozenset()  # "pods", "generated": what the snapshot must hold


@attrs.frozen
class Context:
    """What the checks need besides a snapshot."""

    controller: str = "istio.io/gateway-controller"
    usable_addresses: Sequence[str] = ()
    # generation of (kind, namespace, name) before the case's last patch of it
    generations_before: Mapping[Key, int] = attrs.field(factory=dict)


# --- conditions ---------------------------------------------------------------------------


def generation(obj: Mapping[str, Any]) -> int:
    return int((obj.get("metadata") or {}).get("generation") or 0)


def stale(obj: Mapping[str, Any], conditions: Sequence[Mapping[str, Any]]) -> str | None:
    """``ConditionsHaveLatestObservedGeneration``."""
    want = generation(obj)
    old = [c for c in conditions if int(c.get("observedGeneration") or 0) != want]
    if not old:
        return None
    listed = ", ".join(f"{c.get('type')} (generation {c.get('observedGeneration')})" for c in old)
    return (f"expected observedGeneration to be updated to {want} for all conditions, only "
            f"{len(conditions) - len(old)}/{len(conditions)} were updated. stale conditions "
            f"are: {listed}")


def find_condition(conditions: Sequence[Mapping[str, Any]], wanted: Condition) -> bool:
    """``findConditionInList``: "" status or reason matches any."""
    return any(c.get("type") == wanted.type
               and (not wanted.status or c.get("status") == wanted.status)
               and (not wanted.reason or c.get("reason") == wanted.reason)
               for c in conditions)


def conditions_match(expected: Sequence[Condition], actual: Sequence[Mapping[str, Any]]) -> bool:
    return len(actual) >= len(expected) and all(find_condition(actual, c) for c in expected)


def _show(conditions: Sequence[Mapping[str, Any]]) -> str:
    return "[" + ", ".join(f"{c.get('type')}={c.get('status')} ({c.get('reason')})"
                           for c in conditions) + "]"


def _want(condition: Condition) -> str:
    return f"{condition.type}={condition.status or 'any'} ({condition.reason or 'any reason'})"


def _conditions(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or ())


# --- Gateways -----------------------------------------------------------------------------


def _latest_gateway(snap: Snapshot, ref: Ref) -> tuple[dict[str, Any], str | None]:
    gw = snap.must_get("Gateway", ref)
    return gw, stale(gw, _conditions(gw))


def gateway_address(snap: Snapshot, ref: Ref, listener: str = "") -> tuple[str, int] | None:
    """``WaitForGatewayAddress``: the first typed status address and the port of the named
    listener (else the first), once the Gateway's conditions are current."""
    gw = snap.get("Gateway", ref)
    if gw is None or stale(gw, _conditions(gw)):
        return None
    listeners = list((gw.get("spec") or {}).get("listeners") or ())
    if not listeners:
        return None
    chosen = next((li for li in listeners if listener and li.get("name") == listener),
                  listeners[0])
    for address in (gw["status"].get("addresses") or ()):
        if address.get("type"):
            return str(address["value"]), int(chosen.get("port") or 0)
    return None


def _listener_kinds_match(expected: tuple[str, ...], actual: Sequence[Mapping[str, Any]]
                          ) -> str | None:
    if not expected and actual:
        return f"expected no supportedKinds, got {list(actual)}"
    for kind in expected:
        if not any((a.get("group") or GATEWAY_GROUP) == GATEWAY_GROUP and a.get("kind") == kind
                   for a in actual):
            return f"expected Group:{GATEWAY_GROUP} Kind:{kind} to be present in SupportedKinds"
    return None


def listeners_match(expected: Mapping[str, tuple[int | None, tuple[Condition, ...],
                                                  tuple[str, ...]]],
                    actual: Sequence[Mapping[str, Any]]) -> str | None:
    """``gatewayListenersMatch``."""
    if len(expected) != len(actual):
        return f"expected {len(expected)} status listeners, got {len(actual)}"
    for name, (routes, conditions, kinds) in expected.items():
        found = next((a for a in actual if a.get("name") == name), None)
        if found is None:
            return f"expected status for listener {name} to be present"
        problem = _listener_kinds_match(kinds, found.get("supportedKinds") or ())
        if problem:
            return f"listener {name}: {problem}"
        if int(found.get("attachedRoutes") or 0) != int(routes or 0):
            return (f"listener {name}: expected AttachedRoutes to be {routes or 0}, got "
                    f"{found.get('attachedRoutes')}")
        if not conditions_match(conditions, found.get("conditions") or ()):
            return (f"listener {name}: expected conditions {[_want(c) for c in conditions]}, "
                    f"got {_show(found.get('conditions') or ())}")
    return None


def _gateway_waits(check: GatewayMustBe, ctx: Context, t: TimeoutConfig) -> Iterator[Wait]:
    ref = check.gateway
    name = f"Gateway {ref[0]}/{ref[1]}"
    poll = t.default_poll_interval
    if check.latest:
        def latest(snap: Snapshot) -> str | None:
            return _latest_gateway(snap, ref)[1]
        yield Wait(f"GatewayMustHaveLatestConditions {name}",
                   t.latest_observed_generation_set, poll, latest)
    if check.address:
        def address(snap: Snapshot) -> str | None:
            snap.must_get("Gateway", ref)
            return None if gateway_address(snap, ref) else "no typed status address yet"
        yield Wait(f"WaitForGatewayAddress {name}", t.gateway_must_have_address, poll, address)
    for condition in check.conditions:
        def has(snap: Snapshot, condition: Condition = condition) -> str | None:
            gw, old = _latest_gateway(snap, ref)
            if old:
                raise Fatal(old)
            if find_condition(_conditions(gw), condition):
                return None
            return f"want {_want(condition)}, have {_show(_conditions(gw))}"
        yield Wait(f"GatewayMustHaveCondition {name} {_want(condition)}",
                   t.gateway_must_have_condition, poll, has)
    if check.listeners:
        def listeners(snap: Snapshot) -> str | None:
            gw, old = _latest_gateway(snap, ref)
            return old or listeners_match(check.listeners, gw["status"].get("listeners") or ())
        yield Wait(f"GatewayStatusMustHaveListeners {name}",
                   t.gateway_status_must_have_listeners, poll, listeners)
    if check.listener_conditions:
        def listener_conditions(snap: Snapshot) -> str | None:
            gw = snap.must_get("Gateway", ref)
            return _listeners_have(gw, check.listener_conditions, check.listener_names)
        yield Wait(f"GatewayListenersMustHaveConditions {name}",
                   t.gateway_listeners_must_have_conditions, poll, listener_conditions)
    if check.zero_routes:
        def zero(snap: Snapshot) -> str | None:
            gw, old = _latest_gateway(snap, ref)
            found = list(gw["status"].get("listeners") or ())
            if old:
                return old
            if not found or (len(found) == 1 and not found[0].get("attachedRoutes")):
                return None
            return f"want no listener or one with zero routes, got {found}"
        yield Wait(f"GatewayMustHaveZeroRoutes {name}", t.gateway_status_must_have_listeners,
                   poll, zero)
    if check.attached_listener_sets is not None:
        want = check.attached_listener_sets

        def attached(snap: Snapshot) -> str | None:
            gw, old = _latest_gateway(snap, ref)
            got = int(gw["status"].get("attachedListenerSets") or 0)
            return old or (None if got == want else f"got {got} listener sets, want {want}")
        yield Wait(f"GatewayMustHaveAttachedListeners {name}",
                   t.gateway_status_must_have_listeners, poll, attached)
    if check.status_addresses is not None:
        values: list[str] = []
        for value in check.status_addresses:
            values += list(ctx.usable_addresses) if value == "PLACEHOLDER_USABLE_ADDRS" else [value]

        def addresses(snap: Snapshot) -> str | None:
            gw = snap.must_get("Gateway", ref)
            got = list(gw["status"].get("addresses") or ())
            if len(got) != len(values):
                return f"expected {len(values)} status addresses, got {got}"
            spec_types = {str(a.get("value")): str(a.get("type") or "IPAddress")
                          for a in (gw.get("spec") or {}).get("addresses") or ()}
            for value in values:
                match = [a for a in got if a.get("value") == value]
                if not match:
                    raise Fatal(f"status addresses {got} should contain {value}")
                if value in spec_types and match[0].get("type") != spec_types[value]:
                    raise Fatal(f"address {value}: expected type {spec_types[value]}, got "
                                f"{match[0].get('type')}")
            return None
        yield Wait(f"status addresses of {name}", t.gateway_must_have_address, poll, addresses)


def _listeners_have(obj: Mapping[str, Any], conditions: Sequence[Condition],
                    names: Sequence[str]) -> str | None:
    """``GatewayListenersMustHaveConditions`` (and the ListenerSet one)."""
    pending = set(names)
    for condition in conditions:
        for listener in (obj.get("status") or {}).get("listeners") or ():
            if names and listener.get("name") not in names:
                continue
            if not find_condition(listener.get("conditions") or (), condition):
                return (f"listener {listener.get('name')}: want {_want(condition)}, have "
                        f"{_show(listener.get('conditions') or ())}")
            pending.discard(str(listener.get("name")))
    if pending:
        return f"listeners {sorted(pending)} not in status"
    return None


def _gateway_class_waits(check: GatewayClassMustBe, t: TimeoutConfig) -> Iterator[Wait]:
    ref = ("", check.name)
    poll = t.default_poll_interval
    if check.accepted_any:
        def accepted(snap: Snapshot) -> str | None:
            gwc = snap.must_get("GatewayClass", ref)
            old = stale(gwc, _conditions(gwc))
            if old:
                return old
            if find_condition(_conditions(gwc), Condition("Accepted", "")):
                return None
            return f"no Accepted condition in {_show(_conditions(gwc))}"
        yield Wait(f"GWCMustHaveAcceptedConditionAny {check.name}", t.gwc_must_be_accepted,
                   poll, accepted)
    if check.latest:
        def latest(snap: Snapshot) -> str | None:
            gwc = snap.must_get("GatewayClass", ref)
            return stale(gwc, _conditions(gwc))
        yield Wait(f"GatewayClassMustHaveLatestConditions {check.name}",
                   t.latest_observed_generation_set, poll, latest)


def _listener_set_waits(check: ListenerSetMustBe, t: TimeoutConfig) -> Iterator[Wait]:
    ref = check.listener_set
    name = f"ListenerSet {ref[0]}/{ref[1]}"
    poll = t.default_poll_interval
    for condition in check.conditions:
        def has(snap: Snapshot, condition: Condition = condition) -> str | None:
            ls = snap.get("ListenerSet", ref)
            if ls is None:
                return "not found"
            old = stale(ls, _conditions(ls))
            if old:
                return old
            if find_condition(_conditions(ls), condition):
                return None
            return f"want {_want(condition)}, have {_show(_conditions(ls))}"
        yield Wait(f"ListenerSetMustHaveCondition {name} {_want(condition)}",
                   t.listener_set_must_have_condition, poll, has)
    if check.listeners:
        def listeners(snap: Snapshot) -> str | None:
            ls = snap.must_get("ListenerSet", ref)
            old = stale(ls, _conditions(ls))
            return old or listeners_match(check.listeners, ls["status"].get("listeners") or ())
        yield Wait(f"ListenerSetStatusMustHaveListeners {name}",
                   t.listener_set_listeners_must_have_conditions, poll, listeners)
    if check.listener_conditions:
        def listener_conditions(snap: Snapshot) -> str | None:
            ls = snap.get("ListenerSet", ref)
            if ls is None:
                return "not found"
            old = stale(ls, _conditions(ls))
            return old or _listeners_have(ls, check.listener_conditions, check.listener_names)
        yield Wait(f"ListenerSetListenersMustHaveConditions {name}",
                   t.listener_set_listeners_must_have_conditions, poll, listener_conditions)


# --- routes and policies ------------------------------------------------------------------


def _parents(route: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((route.get("status") or {}).get("parents") or ())


def _names(ref: Mapping[str, Any], parent: Ref) -> bool:
    return ref.get("name") == parent[1] and ref.get("namespace") in (None, parent[0])


def parent_matches(expected: RouteMustBe, actual: Mapping[str, Any], controller: str) -> bool:
    """One expected parent of ``parentsForRouteMatch`` against one actual parent status."""
    ref = actual.get("parentRef") or {}
    if actual.get("controllerName") != controller:
        return False
    if ref.get("group") != expected.parent_group or ref.get("kind") != expected.parent_kind:
        return False
    if ref.get("name") != expected.parent[1]:
        return False
    if ref.get("namespace") != expected.parent[0] and (
            expected.namespace_required or ref.get("namespace") is not None):
        return False
    return conditions_match(expected.conditions, actual.get("conditions") or ())


def _route_waits(check: RouteMustBe | RouteNotAccepted, ctx: Context, t: TimeoutConfig
                 ) -> Iterator[Wait]:
    route_ref = check.route
    name = f"{check.kind} {route_ref[0]}/{route_ref[1]}"
    if isinstance(check, RouteNotAccepted):
        looked = [False]

        def none_accepted(snap: Snapshot) -> str | None:
            route = snap.must_get(check.kind, route_ref)
            parents = _parents(route)
            if not parents:
                if not looked[0]:  # Go looks twice before trusting an empty status
                    looked[0] = True
                    return "no parents yet (looking again)"
                return None
            if len(parents) > 1:
                return f"expected at most one parent, got {len(parents)}"
            old = stale(route, parents[0].get("conditions") or ())
            if old:
                return old
            if conditions_match((Condition("Accepted", "False"),),
                                parents[0].get("conditions") or ()):
                return None
            return f"parent is accepted: {_show(parents[0].get('conditions') or ())}"
        yield Wait(f"{check.kind}MustHaveNoAcceptedParents {name}",
                   t.http_route_must_not_have_parents, 1.0, none_accepted)
        return
    poll = t.default_poll_interval
    parent = f"{check.parent_kind} {check.parent[0]}/{check.parent[1]}"
    if check.match == CONDITION:
        for condition in check.conditions:
            def has(snap: Snapshot, condition: Condition = condition) -> str | None:
                route = snap.must_get(check.kind, route_ref)
                found = False
                for status in _parents(route):
                    old = stale(route, status.get("conditions") or ())
                    if old:
                        return old
                    if _names(status.get("parentRef") or {}, check.parent) and find_condition(
                            status.get("conditions") or (), condition):
                        found = True
                if found:
                    return None
                return (f"want {_want(condition)} for {parent}, have "
                        + "; ".join(_show(p.get("conditions") or ()) for p in _parents(route)))
            yield Wait(f"{check.kind}MustHaveCondition {name} {parent} {_want(condition)}",
                       t.route_condition(check.kind), poll, has)
        return
    previous: list[list[Mapping[str, Any]]] = [[]]

    def parents(snap: Snapshot) -> str | None:
        route = snap.must_get(check.kind, route_ref)
        # Go checks the generation of the parents it read on the previous poll.
        for status in previous[0]:
            old = stale(route, status.get("conditions") or ())
            if old:
                return old
        previous[0] = actual = _parents(route)
        if any(parent_matches(check, status, ctx.controller) for status in actual):
            return None
        return (f"no parent status for {parent} with {[_want(c) for c in check.conditions]}; "
                f"have {[(p.get('parentRef'), _show(p.get('conditions') or ())) for p in actual]}")
    yield Wait(f"RouteMustHaveParents {name} {parent}", t.route_must_have_parents, poll, parents)


def _policy_waits(check: PolicyMustBe, t: TimeoutConfig) -> Iterator[Wait]:
    ref = check.policy

    def has(snap: Snapshot) -> str | None:
        policy = snap.must_get(check.kind, ref)
        ancestors = list((policy.get("status") or {}).get("ancestors") or ())
        for ancestor in ancestors:
            old = stale(policy, ancestor.get("conditions") or ())
            if old:
                return old
            if _names(ancestor.get("ancestorRef") or {}, check.ancestor) and find_condition(
                    ancestor.get("conditions") or (), check.condition):
                return None
        return (f"want {_want(check.condition)} under Gateway {check.ancestor[1]}, have "
                + "; ".join(_show(a.get("conditions") or ()) for a in ancestors))
    yield Wait(f"{check.kind}MustHaveCondition {ref[0]}/{ref[1]} {_want(check.condition)}",
               t.http_route_must_have_condition, t.default_poll_interval, has)


def all_conditions(kind: str, obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = obj.get("status") or {}
    if kind.endswith("Route"):
        return [c for p in status.get("parents") or () for c in p.get("conditions") or ()]
    if kind == "BackendTLSPolicy":
        return [c for a in status.get("ancestors") or () for c in a.get("conditions") or ()]
    return list(status.get("conditions") or ())


def _generation_waits(check: GenerationObserved, ctx: Context, t: TimeoutConfig
                      ) -> Iterator[Wait]:
    key = (check.kind, *check.object)

    def latest(snap: Snapshot) -> str | None:
        obj = snap.must_get(check.kind, check.object)
        if check.changed and key in ctx.generations_before and \
                generation(obj) == ctx.generations_before[key]:
            raise Fatal("generation should change after an update")
        old = stale(obj, all_conditions(check.kind, obj))
        if old and check.at_once:
            raise Fatal(old)
        return old
    yield Wait(f"{check.kind} {key[1]}/{key[2]} conditions of the latest generation",
               t.latest_observed_generation_set, t.default_poll_interval, latest)


def _infrastructure_waits(check: InfrastructureLabelled, t: TimeoutConfig) -> Iterator[Wait]:
    namespace, name = check.gateway

    def labelled(snap: Snapshot) -> str | None:
        gw = snap.must_get("Gateway", check.gateway)
        infra = (gw.get("spec") or {}).get("infrastructure") or {}
        want_labels = {str(k): str(v) for k, v in (infra.get("labels") or {}).items()}
        want_annotations = {str(k): str(v) for k, v in (infra.get("annotations") or {}).items()}
        found: list[tuple[str, Mapping[str, str], Mapping[str, str]]] = []
        for kind in ("ServiceAccount", "Service"):
            for (k, ns, obj_name), obj in sorted(snap.generated.items()):
                meta = obj.get("metadata") or {}
                if k == kind and ns == namespace and \
                        (meta.get("labels") or {}).get(GATEWAY_NAME_LABEL) == name:
                    found.append((f"{kind} {obj_name}", meta.get("labels") or {},
                                  meta.get("annotations") or {}))
                    break
        for pod in snap.pods:
            if pod.namespace == namespace and pod.labels.get(GATEWAY_NAME_LABEL) == name:
                found.append((f"Pod {pod.name}", pod.labels, pod.annotations))
                break
        if not found:
            return "no ServiceAccount, Pod or Service with the gateway-name label yet"
        for what, labels, notes in found:
            for field, want, have in (("label", want_labels, labels),
                                      ("annotation", want_annotations, notes)):
                missing = {k: v for k, v in want.items() if have.get(k) != v}
                if missing:
                    raise Fatal(f"{what}: expected {field}s {missing} of the Gateway's "
                                f"infrastructure, has {dict(have)}")
        return None
    yield Wait(f"GatewayInfrastructure {namespace}/{name}", t.default_test_timeout,
               t.default_poll_interval, labelled, frozenset({"pods", "generated"}))


def namespaces_ready(namespaces: Sequence[str], t: TimeoutConfig, *, mesh: bool = False
                     ) -> Wait:
    """``NamespacesMustBeReady`` (``MeshNamespacesMustBeReady``: pods only)."""
    def ready(snap: Snapshot) -> str | None:
        for namespace in namespaces:
            if not mesh:
                for (kind, ns, name), obj in sorted(snap.objects.items()):
                    if kind != "Gateway" or ns != namespace:
                        continue
                    annotations = (obj.get("metadata") or {}).get("annotations") or {}
                    if annotations.get(SKIP_READINESS) == "true":
                        continue
                    gw = snap.must_get("Gateway", (ns, name))
                    old = stale(gw, _conditions(gw))
                    if old:
                        return f"Gateway {ns}/{name}: {old}"
                    for condition in ("Accepted", "Programmed"):
                        if not find_condition(_conditions(gw), Condition(condition, "True")):
                            return f"Gateway {ns}/{name} not {condition} yet"
            pods = [p for p in snap.pods if p.namespace == namespace]
            if not pods:
                return f"no pods deployed yet in namespace {namespace}"
            for pod in pods:
                if not pod.ready and not pod.terminating:
                    return f"pod {namespace}/{pod.name} not ready yet"
        return None
    return Wait(f"{'Mesh' if mesh else ''}NamespacesMustBeReady {', '.join(namespaces)}",
                t.namespaces_must_be_ready, t.default_poll_interval, ready, frozenset({"pods"}))


def waits(step: Step, ctx: Context, t: TimeoutConfig, mesh_namespaces: Sequence[str] = ()
          ) -> list[Wait]:
    """Every status check of a step, in the order the step takes them."""
    out: list[Wait] = []
    if step.namespaces_ready:
        mesh = all(ns in mesh_namespaces for ns in step.namespaces_ready)
        out.append(namespaces_ready(step.namespaces_ready, t, mesh=mesh))
    for gateway_class in step.gateway_classes:
        out += _gateway_class_waits(gateway_class, t)
    for gateway in step.gateways:
        out += _gateway_waits(gateway, ctx, t)
    for listener_set in step.listener_sets:
        out += _listener_set_waits(listener_set, t)
    for route in step.routes:
        out += _route_waits(route, ctx, t)
    for policy in step.policies:
        out += _policy_waits(policy, t)
    for generation_check in step.generations:
        out += _generation_waits(generation_check, ctx, t)
    for infrastructure in step.infrastructure:
        out += _infrastructure_waits(infrastructure, t)
    return out
