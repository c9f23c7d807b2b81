"""The reflector on plain data: a list compared with what is held, watches resumed where
they stopped, replays ignored, 410 Gone raised, bookmarks moving the resume point."""

from __future__ import annotations

import pytest

from pilotfish.plugins.kube.reflector import Change, Gone, Reflector, WatchError


def obj(name: str, version: str, namespace: str = "default") -> dict:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": version}}


def listed(reflector: Reflector, pages: list[list[dict]], at: str) -> list[Change]:
    reflector.start_list()
    changes = [c for page in pages for c in reflector.page(page)]
    return changes + reflector.end_list(at)


def test_a_list_in_pages_holds_everything_and_resumes_from_its_version():
    reflector = Reflector()
    changes = listed(reflector, [[obj("a", "5"), obj("b", "7")], [obj("c", "6")]], "9")
    assert [c.key for c in changes] == [("default", "a"), ("default", "b"), ("default", "c")]
    assert reflector.synced and reflector.resource_version == "9"
    assert reflector.watch_query(300) == {"watch": "true", "resourceVersion": "9",
                                          "allowWatchBookmarks": "true",
                                          "timeoutSeconds": "300"}


def test_a_relist_that_finds_nothing_new_changes_nothing():
    reflector = Reflector()
    listed(reflector, [[obj("a", "5"), obj("b", "7")]], "9")
    assert listed(reflector, [[obj("a", "5")], [obj("b", "7")]], "12") == []
    assert reflector.resource_version == "12"


def test_a_relist_reports_what_changed_and_what_went():
    reflector = Reflector()
    listed(reflector, [[obj("a", "5"), obj("b", "7")]], "9")
    changes = listed(reflector, [[obj("a", "10"), obj("c", "11")]], "12")
    assert [(c.key[1], c.obj is not None) for c in changes] == [
        ("a", True), ("c", True), ("b", False)]
    assert reflector.versions == {("default", "a"): "10", ("default", "c"): "11"}


def test_watch_events_change_what_is_held_and_replays_are_ignored():
    reflector = Reflector()
    listed(reflector, [[obj("a", "5")]], "9")
    added = reflector.event({"type": "ADDED", "object": obj("b", "10")})
    assert added == Change(("default", "b"), obj("b", "10"))
    # A resumed watch may send again what was seen: the same version is no change.
    assert reflector.event({"type": "ADDED", "object": obj("b", "10")}) is None
    assert reflector.event({"type": "MODIFIED", "object": obj("a", "11")}) is not None
    assert reflector.event({"type": "DELETED", "object": obj("a", "12")}) == Change(
        ("default", "a"), None)
    assert reflector.event({"type": "DELETED", "object": obj("zz", "13")}) is None
    assert reflector.resource_version == "13"


def test_bookmarks_move_the_resume_point_and_change_nothing():
    reflector = Reflector()
    listed(reflector, [[]], "9")
    assert reflector.event({"type": "BOOKMARK", "object": {
        "kind": "Pod", "metadata": {"resourceVersion": "42"}}}) is None
    assert reflector.resource_version == "42" and reflector.versions == {}


def test_410_gone_asks_for_a_relist_and_other_errors_are_errors():
    reflector = Reflector()
    with pytest.raises(Gone, match="too old"):
        reflector.event({"type": "ERROR", "object": {
            "kind": "Status", "code": 410, "reason": "Expired",
            "message": "too old resource version: 5 (90)"}})
    with pytest.raises(WatchError, match=r"InternalError \(500\)"):
        reflector.event({"type": "ERROR", "object": {"code": 500, "reason": "InternalError"}})
    with pytest.raises(WatchError, match="not a watch event"):
        reflector.event({"type": "SURPRISE", "object": obj("a", "1")})


def test_cluster_scoped_objects_are_keyed_without_a_namespace():
    reflector = Reflector()
    changes = listed(reflector, [[{"metadata": {"name": "node-1", "resourceVersion": "3"}}]],
                     "4")
    assert changes[0].key == ("", "node-1")
