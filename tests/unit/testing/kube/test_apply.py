"""Server-side apply's field ownership, on plain data."""

from __future__ import annotations

import pytest

from pilotfish.testing.kube import apply
from pilotfish.testing.kube.errors import ApiError

NOW = "2024-01-01T00:00:00Z"


def applied(live, config, manager, force=False):
    return apply.apply(live, config, manager, force, api_version="v1", now=NOW,
                       keep=lambda path: True)


def deployment(**spec):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": spec}


def test_field_paths_name_keyed_list_items_by_their_key():
    paths = apply.field_paths(deployment(replicas=1, template={"spec": {"containers": [
        {"name": "app", "image": "app:1"}]}}))
    item = 'k:{"name":"app"}'
    assert paths == {("f:spec", "f:replicas"),
                     ("f:spec", "f:template", "f:spec", "f:containers", item, "f:name"),
                     ("f:spec", "f:template", "f:spec", "f:containers", item, "f:image")}
    assert apply.render(sorted(paths)[0]) == '.spec.replicas'
    assert apply.from_fields_v1(apply.to_fields_v1(paths)) == paths


def test_apply_keeps_other_managers_fields_and_drops_what_it_no_longer_applies():
    live = applied(None, deployment(replicas=1, paused=True), "installer")
    live = applied(live, deployment(template={"metadata": {"labels": {"a": "1"}}}), "labeller")
    live = applied(live, deployment(replicas=2), "installer")
    assert live["spec"] == {"replicas": 2, "template": {"metadata": {"labels": {"a": "1"}}}}
    owners = {e["manager"] for e in live["metadata"]["managedFields"]}
    assert owners == {"installer", "labeller"}


def test_apply_conflicts_name_the_field_and_its_manager_and_force_takes_it():
    live = applied(None, deployment(replicas=1), "installer")
    with pytest.raises(ApiError) as conflict:
        applied(live, deployment(replicas=3), "autoscaler")
    assert conflict.value.code == 409
    assert conflict.value.details["causes"][0]["field"] == ".spec.replicas"
    taken = applied(live, deployment(replicas=3), "autoscaler", force=True)
    assert taken["spec"]["replicas"] == 3
    assert [e["manager"] for e in taken["metadata"]["managedFields"]] == ["autoscaler"]


def test_an_update_takes_the_fields_it_changes():
    live = applied(None, deployment(replicas=1, paused=True), "installer")
    changed = {**live, "spec": {"replicas": 5, "paused": True}}
    apply.record_update(live, changed, "kubectl-scale", api_version="v1", now=NOW,
                        keep=lambda path: True)
    owned = {e["manager"]: apply.from_fields_v1(e["fieldsV1"])
             for e in changed["metadata"]["managedFields"]}
    assert owned == {"installer": {("f:spec", "f:paused")},
                     "kubectl-scale": {("f:spec", "f:replicas")}}
