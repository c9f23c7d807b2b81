"""The store's revisions, history and consistent pages, without a server."""

from __future__ import annotations

import pytest

from pilotfish.testing.kube.errors import ApiError
from pilotfish.testing.kube.store import Store

PODS = ("", "pods")


def pod(name, **labels):
    return {"metadata": {"name": name, "namespace": "ns", "labels": labels}}


def test_every_write_takes_the_next_revision_and_listeners_hear_it():
    store, heard = Store(), []
    store.listeners.append(heard.append)
    first = store.put(PODS, pod("a"))
    second = store.put(PODS, pod("a", changed="yes"))
    gone = store.delete(PODS, ("ns", "a"))
    assert [c.type for c in heard] == ["ADDED", "MODIFIED", "DELETED"]
    assert [int(o["metadata"]["resourceVersion"]) for o in (first, second, gone)] == [2, 3, 4]
    assert heard[1].previous == first and store.get(PODS, ("ns", "a")) is None


def test_pages_are_read_at_the_first_pages_revision():
    store = Store()
    for name in "abcde":
        store.put(PODS, pod(name))
    page, at, token, remaining = store.list(PODS, "ns", lambda obj: True, limit=2)
    assert [p["metadata"]["name"] for p in page] == ["a", "b"] and remaining == 3
    store.delete(PODS, ("ns", "c"))
    store.put(PODS, pod("d", changed="yes"))
    store.put(PODS, pod("f"))
    rest, again, token, _ = store.list(PODS, "ns", lambda obj: True, limit=10, token=token)
    assert again == at and token == ""
    assert [(p["metadata"]["name"], p["metadata"]["labels"]) for p in rest] == [
        ("c", {}), ("d", {}), ("e", {})]


def test_changes_after_a_compacted_revision_are_gone():
    store = Store(history=3)
    for name in "abcdef":
        store.put(PODS, pod(name))
    assert [c.key[1] for c in store.changes_after(4)] == ["d", "e", "f"]
    with pytest.raises(ApiError) as gone:
        list(store.changes_after(3))
    assert (gone.value.code, gone.value.reason) == (410, "Expired")
    store.compact()
    assert list(store.changes_after(store.revision)) == []
    with pytest.raises(ApiError):
        list(store.changes_after(store.revision - 1))
