"""The suite's status checks, as the Go helpers poll them, against snapshots."""

from __future__ import annotations

from typing import Any

import pytest

from pilotfish.testing.conformance import status
from pilotfish.testing.conformance.cases.checks import accepted, parents_accepted, step
from pilotfish.testing.conformance.model import (
    PARENT,
    Condition,
    GatewayMustBe,
    GenerationObserved,
    RouteMustBe,
    RouteNotAccepted,
    Step,
)
from pilotfish.testing.conformance.timeouts import DEFAULT

NS = "gateway-conformance-infra"
GW = (NS, "same-namespace")
ROUTE = (NS, "web")
CONTROLLER = "istio.io/gateway-controller"


def cond(type_: str, status_: str = "True", reason: str = "", generation: int = 1
         ) -> dict[str, Any]:
    return {"type": type_, "status": status_, "reason": reason or type_,
            "observedGeneration": generation}


def gateway(generation: int = 1, **status_: Any) -> dict[str, Any]:
    return {"kind": "Gateway", "metadata": {"name": GW[1], "namespace": NS,
                                            "generation": generation},
            "spec": {"listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
            "status_": status_}


def snapshot(*objects: tuple[dict[str, Any], dict[str, Any]], pods: tuple[status.Pod, ...] = ()
             ) -> status.Snapshot:
    stored, statuses = {}, {}
    for obj, body in objects:
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        stored[key] = {k: v for k, v in obj.items() if k != "status_"}
        statuses[key] = body
    return status.Snapshot(stored, statuses, pods)


def route(generation: int = 1) -> dict[str, Any]:
    return {"kind": "HTTPRoute", "metadata": {"name": ROUTE[1], "namespace": NS,
                                              "generation": generation}, "spec": {}}


def parent(conditions: list[dict[str, Any]], **ref: Any) -> dict[str, Any]:
    return {"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                          "namespace": NS, "name": GW[1], **ref},
            "controllerName": CONTROLLER, "conditions": conditions}


def run(step_: Step, snap: status.Snapshot, ctx: status.Context | None = None
        ) -> list[str | None]:
    return [wait.check(snap) for wait in status.waits(step_, ctx or status.Context(), DEFAULT)]


READY = {"addresses": [{"type": "IPAddress", "value": "10.0.0.5"}],
         "conditions": [cond("Accepted"), cond("Programmed")],
         "listeners": [{"name": "http", "attachedRoutes": 1,
                        "supportedKinds": [{"group": "gateway.networking.k8s.io",
                                            "kind": "HTTPRoute"}],
                        "conditions": [cond("Accepted"), cond("Programmed"),
                                       cond("ResolvedRefs")]}]}


def test_gateway_and_routes_accepted_holds_on_a_ready_gateway_and_route():
    snap = snapshot((gateway(), READY),
                    (route(), {"parents": [parent([cond("Accepted"), cond("ResolvedRefs")])]}))
    assert run(step(accepted("HTTPRoute", GW, ROUTE)), snap) == [None, None, None]
    assert status.gateway_address(snap, GW) == ("10.0.0.5", 80)


def test_a_stale_gateway_has_no_address_yet_and_fails_a_condition_check_at_once():
    old = {**READY, "conditions": [cond("Accepted", generation=1)]}
    snap = snapshot((gateway(generation=2), old))
    assert status.gateway_address(snap, GW) is None
    [wait] = status.waits(Step(gateways=(GatewayMustBe(GW, conditions=(
        Condition("Accepted", "True"),)),)), status.Context(), DEFAULT)
    with pytest.raises(status.Fatal, match="observedGeneration to be updated to 2"):
        wait.check(snap)
    assert wait.timeout == 180


def test_listener_conditions_hold_vacuously_without_listeners_unless_named():
    snap = snapshot((gateway(), {"conditions": []}))
    anywhere = Step(gateways=(GatewayMustBe(GW, listener_conditions=(Condition("Accepted",
                                                                               "True"),)),))
    named = Step(gateways=(GatewayMustBe(GW, listener_conditions=(
        Condition("Accepted", "True"),), listener_names=("http",)),))
    assert run(anywhere, snap) == [None]  # Go's loop finds nothing to fail on
    assert run(named, snap) == ["listeners ['http'] not in status"]


def test_status_listeners_are_compared_exactly_in_count_and_routes():
    snap = snapshot((gateway(), READY))
    want = {"http": (1, (Condition("Accepted", "True"),), ("HTTPRoute",))}
    assert run(Step(gateways=(GatewayMustBe(GW, listeners=want),)), snap) == [None]
    wrong = {"http": (0, (), ("HTTPRoute",))}
    assert "AttachedRoutes" in str(run(Step(gateways=(GatewayMustBe(GW, listeners=wrong),)),
                                       snap)[0])
    none = {"http": (1, (), ())}  # no kinds expected: none may be listed
    assert "no supportedKinds" in str(run(Step(gateways=(GatewayMustBe(GW, listeners=none),)),
                                       snap)[0])


def test_route_parents_match_by_controller_group_kind_name_and_namespace():
    good = parent([cond("Accepted")])
    check = parents_accepted("HTTPRoute", GW, ROUTE)[0]
    assert status.parent_matches(check, good, CONTROLLER)
    assert not status.parent_matches(check, good, "other.io/controller")
    no_group = {**good, "parentRef": {k: v for k, v in good["parentRef"].items()
                                      if k != "group"}}
    assert not status.parent_matches(check, no_group, CONTROLLER)
    # an unset namespace is fine unless the route lives elsewhere
    no_ns = {**good, "parentRef": {k: v for k, v in good["parentRef"].items()
                                   if k != "namespace"}}
    assert status.parent_matches(check, no_ns, CONTROLLER)
    across = RouteMustBe("HTTPRoute", ("other", "web"), GW, (Condition("Accepted", "True"),),
                         match=PARENT, namespace_required=True)
    assert not status.parent_matches(across, no_ns, CONTROLLER)


def test_route_parents_check_the_generation_of_the_previous_look_as_go_does():
    [wait] = status.waits(Step(routes=parents_accepted("HTTPRoute", GW, ROUTE)),
                          status.Context(), DEFAULT)
    stale = snapshot((route(generation=2), {"parents": [parent([cond("Accepted")])]}))
    assert wait.check(stale) is None  # first look: Go has no earlier parents to check


def test_route_condition_waits_while_any_parent_is_stale():
    snap = snapshot((route(generation=2), {"parents": [parent([cond("Accepted", generation=1)])]}))
    check = RouteMustBe("HTTPRoute", ROUTE, GW, (Condition("Accepted", "True"),))
    [why] = run(Step(routes=(check,)), snap)
    assert why is not None and "observedGeneration" in why


def test_no_accepted_parents_needs_two_looks_at_an_empty_status():
    [wait] = status.waits(Step(routes=(RouteNotAccepted("HTTPRoute", ROUTE),)),
                          status.Context(), DEFAULT)
    snap = snapshot((route(), {}))
    assert wait.check(snap) is not None
    assert wait.check(snap) is None
    assert wait.interval == 1.0
    rejected = snapshot((route(), {"parents": [parent([cond("Accepted", "False",
                                                            "NotAllowedByListeners")])]}))
    assert status.waits(Step(routes=(RouteNotAccepted("HTTPRoute", ROUTE),)),
                        status.Context(), DEFAULT)[0].check(rejected) is None


def test_generation_must_change_after_a_patch():
    key = ("Gateway", *GW)
    snap = snapshot((gateway(generation=2), {"conditions": [cond("Accepted", generation=2)]}))
    same = status.Context(generations_before={key: 2})
    moved = status.Context(generations_before={key: 1})
    check = Step(generations=(GenerationObserved("Gateway", GW, changed=True),))
    with pytest.raises(status.Fatal, match="generation should change"):
        run(check, snap, same)
    assert run(check, snap, moved) == [None]


def test_namespaces_ready_wants_gateways_programmed_and_every_pod_ready():
    wait = status.namespaces_ready((NS,), DEFAULT)
    ready_pod = status.Pod("echo-1", NS, True)
    assert wait.check(snapshot((gateway(), READY), pods=(ready_pod,))) is None
    assert "not ready" in str(wait.check(snapshot(
        (gateway(), READY), pods=(ready_pod, status.Pod("echo-2", NS, False)))))
    assert "no pods" in str(wait.check(snapshot((gateway(), READY))))
    unprogrammed = {**READY, "conditions": [cond("Accepted")]}
    assert "Programmed" in str(wait.check(snapshot((gateway(), unprogrammed),
                                                   pods=(ready_pod,))))
    skipped = gateway()
    skipped["metadata"]["annotations"] = {status.SKIP_READINESS: "true"}
    assert wait.check(snapshot((skipped, {}), pods=(ready_pod,))) is None


def test_static_status_addresses_stand_for_the_usable_address():
    snap = snapshot((gateway(), {"addresses": [{"type": "IPAddress", "value": "10.0.0.9"}]}))
    check = Step(gateways=(GatewayMustBe(GW, status_addresses=("PLACEHOLDER_USABLE_ADDRS",)),))
    assert run(check, snap, status.Context(usable_addresses=("10.0.0.9",))) == [None]
    with pytest.raises(status.Fatal):
        run(check, snap, status.Context(usable_addresses=("10.0.0.8",)))


def test_namespaces_ready_passes_over_pods_being_deleted():
    # Go skips pods with a deletionTimestamp: a removed Gateway's router still draining
    wait = status.namespaces_ready((NS,), DEFAULT)
    draining = status.Pod("old-gw-istio-1-2", NS, False, terminating=True)
    assert wait.check(snapshot((gateway(), READY), pods=(
        status.Pod("echo-1", NS, True), draining))) is None


def test_a_status_view_that_does_not_answer_is_looked_at_again():
    # GRPCRouteWeight once failed as a runner error: discovery, busy, let the status
    # request time out; Go's helpers keep polling through API errors, and so does poll
    from pilotfish.testing.conformance.runner import Runner

    class Busy:
        calls = 0

        def snapshot(self, needs: object) -> str:
            Busy.calls += 1
            if Busy.calls == 1:
                raise TimeoutError("timed out")
            return "fresh"

    wait = status.Wait("a check", 5, 0.01, lambda snap: None if snap == "fresh" else "stale")
    Runner(Busy(), frozenset(), log=lambda _: None).poll(wait)
    assert Busy.calls == 2
