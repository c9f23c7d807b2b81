"""JSON patch, merge patch and strategic merge patch, on plain data."""

from __future__ import annotations

import pytest

from pilotfish.testing.kube.patches import PatchError, json_patch, merge_patch, strategic_merge

POD = {"metadata": {"labels": {"a": "1"}},
       "spec": {"containers": [{"name": "app", "image": "app:1",
                                "ports": [{"containerPort": 80}]},
                               {"name": "side", "image": "side:1"}],
                "tolerations": [{"key": "x"}]}}


def test_merge_patch_merges_objects_removes_nulls_and_replaces_lists():
    patched = merge_patch(POD, {"metadata": {"labels": {"a": None, "b": "2"}},
                                "spec": {"containers": [{"name": "only"}]}})
    assert patched["metadata"]["labels"] == {"b": "2"}
    assert patched["spec"]["containers"] == [{"name": "only"}]
    assert POD["metadata"]["labels"] == {"a": "1"}  # the original is untouched


def test_strategic_merge_merges_keyed_lists_by_key():
    patched = strategic_merge(POD, {"spec": {
        "containers": [{"name": "side", "image": "side:2"},
                       {"name": "app", "ports": [{"containerPort": 8080}]},
                       {"name": "new", "image": "new:1"}],
        "tolerations": [{"key": "y"}]}})
    containers = patched["spec"]["containers"]
    assert [(c["name"], c.get("image")) for c in containers] == [
        ("app", "app:1"), ("side", "side:2"), ("new", "new:1")]
    assert containers[0]["ports"] == [{"containerPort": 80}, {"containerPort": 8080}]
    assert patched["spec"]["tolerations"] == [{"key": "y"}]  # no merge key: replaced
    deleted = strategic_merge(POD, {"spec": {"containers": [
        {"name": "side", "$patch": "delete"}]}})
    assert [c["name"] for c in deleted["spec"]["containers"]] == ["app"]


def test_json_patch_operations():
    patched = json_patch(POD, [
        {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
        {"op": "add", "path": "/spec/containers/-", "value": {"name": "last"}},
        {"op": "remove", "path": "/spec/containers/1"},
        {"op": "copy", "from": "/metadata/labels", "path": "/metadata/annotations"},
        {"op": "move", "from": "/spec/tolerations", "path": "/spec/kept"},
        {"op": "replace", "path": "/spec/containers/0/image", "value": "app:2"},
        {"op": "test", "path": "/spec/containers/1/name", "value": "last"}])
    assert patched["metadata"]["labels"] == {"a": "1", "b/c": "2"}
    assert patched["metadata"]["annotations"] == patched["metadata"]["labels"]
    assert [c["name"] for c in patched["spec"]["containers"]] == ["app", "last"]
    assert "tolerations" not in patched["spec"] and patched["spec"]["kept"] == [{"key": "x"}]
    assert POD["spec"]["containers"][0]["image"] == "app:1"


@pytest.mark.parametrize(("operations", "message"), [
    ([{"op": "remove", "path": "/nowhere"}], "no such member"),
    ([{"op": "test", "path": "/metadata/labels/a", "value": "2"}], "testing value"),
    ([{"op": "add", "path": "/spec/containers/9", "value": {}}], "out of range"),
    ([{"op": "shuffle", "path": "/spec"}], "unexpected op"),
    ({"op": "add"}, "a list of operations"),
])
def test_json_patch_refusals_say_where(operations, message):
    with pytest.raises(PatchError, match=message):
        json_patch(POD, operations)
