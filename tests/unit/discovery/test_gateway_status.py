"""Gateway API status write-back: what a patch holds (transition times kept or set, other
controllers' route parents left alone, nothing when only times differ), then the writer
against the fake API server through the official client."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from pilotfish.core import meshconfig
from pilotfish.core.gateway_api.status import CONTROLLER
from pilotfish.core.plugins import Plugins
from pilotfish.core.push import PushRequest
from pilotfish.core.yamlload import load_text
from pilotfish.discovery.app import Discovery, DiscoveryOptions
from pilotfish.discovery.gateway_status import StatusWriter, status_patch, timed
from pilotfish.plugins.kube import client as kube_client
from pilotfish.testing.kube import FakeKubeApi, running
from pilotfish.testing.kube.crds import crd
from tests.unit.discovery.racing_client import RacingClient

GROUP, V1 = "gateway.networking.k8s.io", "gateway.networking.k8s.io/v1"
THEN, NOW = "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z"


def condition(kind: str, status: str = "True", reason: str = "", generation: int = 1,
              at: str | None = None) -> dict[str, Any]:
    found = {"type": kind, "status": status, "reason": reason or kind, "message": "",
             "observedGeneration": generation}
    return found | ({"lastTransitionTime": at} if at else {})


def parent(name: str, controller: str = CONTROLLER, at: str | None = None,
           accepted: str = "True") -> dict[str, Any]:
    return {"parentRef": {"group": GROUP, "kind": "Gateway", "namespace": "shop",
                          "name": name},
            "controllerName": controller,
            "conditions": [condition("Accepted", accepted, at=at),
                           condition("ResolvedRefs", at=at)]}


def test_new_conditions_get_the_time_of_the_write():
    patch = status_patch({}, {"conditions": [condition("Accepted")]}, NOW)
    assert patch == {"conditions": [condition("Accepted", at=NOW)]}


def test_nothing_is_written_when_only_transition_times_differ():
    held = {"conditions": [condition("Accepted", at=THEN), condition("Programmed", at=THEN)]}
    assert status_patch(held, {"conditions": [condition("Accepted"),
                                              condition("Programmed")]}, NOW) is None


def test_a_flipped_condition_gets_a_new_time_the_unchanged_keep_theirs():
    held = {"conditions": [condition("Accepted", at=THEN), condition("Programmed", at=THEN)]}
    computed = {"conditions": [condition("Accepted", reason="Other", generation=2),
                               condition("Programmed", "False", "Invalid", 2)]}
    assert status_patch(held, computed, NOW) == {"conditions": [
        condition("Accepted", reason="Other", generation=2, at=THEN),
        condition("Programmed", "False", "Invalid", 2, at=NOW)]}


def test_listener_conditions_are_timed_per_listener_and_stale_fields_cleared():
    held = {"listeners": [{"name": "http", "attachedRoutes": 1,
                           "conditions": [condition("Accepted", at=THEN)]}],
            "addresses": [{"type": "IPAddress", "value": "10.0.0.1"}], "extra": 1}
    computed = {"addresses": [], "listeners": [
        {"name": "http", "attachedRoutes": 2, "conditions": [condition("Accepted")]},
        {"name": "https", "attachedRoutes": 0, "conditions": [condition("Accepted")]}]}
    assert status_patch(held, computed, NOW) == {"addresses": [], "extra": None, "listeners": [
        {"name": "http", "attachedRoutes": 2,
         "conditions": [condition("Accepted", at=THEN)]},
        {"name": "https", "attachedRoutes": 0,
         "conditions": [condition("Accepted", at=NOW)]}]}


def test_route_parents_of_other_controllers_stay_ours_are_replaced():
    other = parent("theirs", controller="example.com/gateway", at=THEN)
    held = {"parents": [other, parent("gw", at=THEN)], "note": "kept: not ours"}
    patch = status_patch(held, {"parents": [parent("gw", accepted="False"), parent("gw2")]},
                         NOW)
    assert patch == {"parents": [
        other, {**parent("gw", accepted="False"), "conditions": [
            condition("Accepted", "False", at=NOW), condition("ResolvedRefs", at=THEN)]},
        parent("gw2", at=NOW)]}
    assert status_patch(held, {"parents": [parent("gw")]}, NOW) is None


def test_our_parents_go_when_we_describe_a_route_no_more():
    other = parent("theirs", controller="example.com/gateway", at=THEN)
    assert status_patch({"parents": [other, parent("gw", at=THEN)]}, None, NOW) == {
        "parents": [other]}
    assert status_patch({"parents": [other]}, None, NOW) is None
    assert status_patch({"conditions": [condition("Accepted")]}, None, NOW) is None


def test_timed_matches_conditions_by_type():
    assert timed([condition("A"), condition("B", "False")],
                 [condition("B", "False", at=THEN), condition("A", "False", at=THEN)], NOW) == [
        condition("A", at=NOW), condition("B", "False", at=THEN)]


# -- the writer against the API server -----------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeKubeApi]:
    with running(tmp_path / "api") as api:
        api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
                 crd(GROUP, "GatewayClass", namespaced=False), crd(GROUP, "Gateway"),
                 crd(GROUP, "HTTPRoute"))
        yield api


@pytest.fixture
def custom(api: FakeKubeApi) -> Iterator[kubernetes.client.CustomObjectsApi]:
    with kubernetes.config.new_client_from_config(str(api.kubeconfig)) as made:
        yield kubernetes.client.CustomObjectsApi(made)


@pytest.fixture
def client(api: FakeKubeApi) -> Iterator[kube_client.Client]:
    made = kube_client.load(api.kubeconfig)
    yield made
    made.close()


def gateway_status(generation: int = 1, programmed: str = "True") -> dict[str, Any]:
    return {"addresses": [{"type": "IPAddress", "value": "10.1.0.7"}],
            "conditions": [condition("Accepted", generation=generation),
                           condition("Programmed", programmed, generation=generation)],
            "listeners": [{"name": "http", "attachedRoutes": 1, "supportedKinds": [],
                           "conditions": [condition("Accepted", generation=generation)]}]}


def view(gateway: dict[str, Any], route: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"apiVersion": V1, "kind": "Gateway", "namespace": "shop", "name": "gw",
             "status": gateway},
            {"apiVersion": V1, "kind": "HTTPRoute", "namespace": "shop", "name": "r",
             "status": route}]


def test_the_writer_writes_what_differs_and_then_nothing(api, custom, client):
    custom.create_namespaced_custom_object(GROUP, "v1", "shop", "gateways", {
        "apiVersion": V1, "kind": "Gateway", "metadata": {"name": "gw"},
        "spec": {"gatewayClassName": "istio", "listeners": []}})
    other = parent("theirs", controller="example.com/gateway", at=THEN)
    custom.create_namespaced_custom_object(GROUP, "v1", "shop", "httproutes", {
        "apiVersion": V1, "kind": "HTTPRoute", "metadata": {"name": "r"}, "spec": {}})
    custom.patch_namespaced_custom_object_status(GROUP, "v1", "shop", "httproutes", "r",
                                                 {"status": {"parents": [other]}})
    writer = StatusWriter(client, lambda: [])
    statuses = view(gateway_status(), {"parents": [parent("gw")]})
    assert writer.reconcile(copy.deepcopy(statuses))
    assert writer.writes == 2
    gw = custom.get_namespaced_custom_object(GROUP, "v1", "shop", "gateways", "gw")
    assert [(c["type"], c["status"], c["observedGeneration"]) for c in
            gw["status"]["conditions"]] == [("Accepted", "True", 1), ("Programmed", "True", 1)]
    assert all(c["lastTransitionTime"] for c in gw["status"]["conditions"])
    assert gw["metadata"]["generation"] == 1  # status is no spec change
    route = custom.get_namespaced_custom_object(GROUP, "v1", "shop", "httproutes", "r")
    assert [p["controllerName"] for p in route["status"]["parents"]] == [
        "example.com/gateway", CONTROLLER]
    patches = api.requests("PATCH", "gateways", "status")
    assert writer.reconcile(copy.deepcopy(statuses))
    assert writer.writes == 2 and api.requests("PATCH", "gateways", "status") == patches
    writer.reconcile(view(gateway_status(programmed="False"), {"parents": [parent("gw")]}))
    assert writer.writes == 3
    gw = custom.get_namespaced_custom_object(GROUP, "v1", "shop", "gateways", "gw")
    accepted, programmed = gw["status"]["conditions"]
    assert programmed["status"] == "False"
    assert programmed["lastTransitionTime"] >= accepted["lastTransitionTime"]


def test_a_failed_write_is_reported_for_a_retry_not_raised(api, custom, client):
    writer = StatusWriter(client, lambda: [])
    # A kind whose CRD is missing: the list fails; the pass says so and goes on.
    assert not writer.reconcile([{"apiVersion": V1, "kind": "GRPCRoute", "namespace": "shop",
                                  "name": "g", "status": {"parents": [parent("gw")]}}])
    assert writer.writes == 0


# -- in discovery --------------------------------------------------------------------------


def gateway_yaml(name: str) -> str:
    return (f"apiVersion: {V1}\nkind: Gateway\nmetadata: {{name: {name}, namespace: shop}}\n"
            "spec:\n  gatewayClassName: istio\n"
            "  listeners: [{name: http, port: 8080, protocol: HTTP}]\n")


def test_without_a_cluster_nothing_is_written_and_only_cluster_objects_would_be():
    config = meshconfig.MeshConfig()
    found = Discovery(config, Plugins.from_config(config), DiscoveryOptions(
        debug_address=None))
    assert found.status_writer is None and not found.elections  # files: the view only
    for origin, name in (("kubernetes:gateways.gateway.networking.k8s.io", "from-cluster"),
                         ("gateways.yaml", "from-file")):
        objects, errors = load_text(gateway_yaml(name), origin)
        assert not errors
        found.store.replace(origin, objects)
    found.rebuild(PushRequest.full("test", 0.0, forced=True))
    assert [item["name"] for item in found.state.push.gateway_api.status.view()] == [
        "from-cluster", "from-file"]
    assert [item["name"] for item in found.gateway_statuses()] == ["from-cluster"]


def test_a_concurrent_change_fails_the_write_and_the_next_pass_makes_it(api, custom, client):
    custom.create_namespaced_custom_object(GROUP, "v1", "shop", "gateways", {
        "apiVersion": V1, "kind": "Gateway", "metadata": {"name": "gw"},
        "spec": {"gatewayClassName": "istio", "listeners": []}})
    def edit() -> None:
        custom.patch_namespaced_custom_object(GROUP, "v1", "shop", "gateways", "gw", {
            "metadata": {"labels": {"edited": "yes"}}})

    writer = StatusWriter(RacingClient(client, edit, ["PATCH"]), lambda: [])
    statuses = view(gateway_status(), {"parents": []})[:1]
    assert not writer.reconcile(statuses)  # 409: written at a stale resourceVersion
    assert writer.failures == 1 and "status" not in custom.get_namespaced_custom_object(
        GROUP, "v1", "shop", "gateways", "gw")
    assert writer.reconcile(statuses) and writer.writes == 1
    gw = custom.get_namespaced_custom_object(GROUP, "v1", "shop", "gateways", "gw")
    assert gw["metadata"]["labels"] == {"edited": "yes"} and gw["status"]["conditions"]
