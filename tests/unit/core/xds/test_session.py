"""The sans-IO xDS session: subscriptions, ACK/NACK, stale nonces, delta removals."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from pilotfish.core.xds import types
from pilotfish.core.xds.resources import Resource, ResourceSet
from pilotfish.core.xds.session import Mode, Outcome, Session, SyncStatus


def clusters(*names: str, tag: str = "") -> ResourceSet:
    return ResourceSet.of(types.CLUSTER, [
        Resource.from_message(n, types.CLUSTER, cluster_pb2.Cluster(name=n, alt_stat_name=tag))
        for n in names
    ])


def assignments(*names: str, tag: str = "") -> ResourceSet:
    return ResourceSet.of(types.ENDPOINT, [
        Resource.from_message(
            n, types.ENDPOINT,
            endpoint_pb2.ClusterLoadAssignment(cluster_name=n + tag),
        )
        for n in names
    ])


def sotw_request(session: Session, type_url: str, names=(), nonce="", version="", error=None):
    return session.receive_sotw(type_url, names, nonce, version, error, now=1.0)


def delta_request(session: Session, type_url: str, sub=(), unsub=(), initial=None, nonce="",
                  error=None):
    return session.receive_delta(type_url, sub, unsub, initial or {}, nonce, error, now=1.0)


def test_sotw_wildcard_initial_then_ack_is_not_answered():
    s = Session(Mode.SOTW)
    d = sotw_request(s, types.CLUSTER)
    assert d.outcome is Outcome.INITIAL and d.respond
    response = s.plan(clusters("a", "b"))
    assert [r.name for r in response.resources] == ["a", "b"]
    s.sent(response, 1.0)
    assert s.watches[types.CLUSTER].status is SyncStatus.STALE
    d = sotw_request(s, types.CLUSTER, nonce=response.nonce, version=response.version)
    assert d.outcome is Outcome.ACK and not d.respond
    assert s.watches[types.CLUSTER].status is SyncStatus.SYNCED
    # Nothing changed: nothing to send.
    assert s.plan(clusters("a", "b")) is None


def test_sotw_wildcard_sends_full_set_on_change_and_absence_deletes():
    s = Session(Mode.SOTW)
    sotw_request(s, types.CLUSTER)
    first = s.plan(clusters("a", "b"))
    s.sent(first, 1.0)
    second = s.plan(clusters("a"))
    assert [r.name for r in second.resources] == ["a"]
    assert second.removed == ()


def test_sotw_stale_nonce_is_ignored():
    s = Session(Mode.SOTW)
    sotw_request(s, types.CLUSTER)
    one = s.plan(clusters("a"))
    s.sent(one, 1.0)
    two = s.plan(clusters("a", "b"))
    s.sent(two, 1.0)
    d = sotw_request(s, types.CLUSTER, nonce=one.nonce, version=one.version)
    assert d.outcome is Outcome.STALE and not d.respond
    assert s.watches[types.CLUSTER].nonce_acked == ""


def test_sotw_nack_records_error_and_keeps_acked_version():
    s = Session(Mode.SOTW)
    sotw_request(s, types.CLUSTER)
    good = s.plan(clusters("a"))
    s.sent(good, 1.0)
    sotw_request(s, types.CLUSTER, nonce=good.nonce, version=good.version)
    bad = s.plan(clusters("a", "bad"))
    s.sent(bad, 2.0)
    d = sotw_request(s, types.CLUSTER, nonce=bad.nonce, version=good.version,
                     error="cluster bad: invalid")
    assert d.outcome is Outcome.NACK and not d.respond
    watch = s.watches[types.CLUSTER]
    assert watch.status is SyncStatus.ERROR
    assert watch.last_error == "cluster bad: invalid"
    assert watch.version_acked == good.version
    # The same content is not resent (that would loop NACKs)...
    assert s.plan(clusters("a", "bad")) is None
    # ...but a change is, and its ACK clears the error.
    fixed = s.plan(clusters("a", "fixed"))
    s.sent(fixed, 3.0)
    sotw_request(s, types.CLUSTER, nonce=fixed.nonce, version=fixed.version)
    assert watch.status is SyncStatus.SYNCED and watch.last_error == ""


def test_sotw_eds_sends_only_changed_and_newly_subscribed_names():
    s = Session(Mode.SOTW)
    sotw_request(s, types.ENDPOINT, names=["a", "b"])
    first = s.plan(assignments("a", "b", "c"))
    assert [r.name for r in first.resources] == ["a", "b"]  # only what was asked for
    s.sent(first, 1.0)
    d = sotw_request(s, types.ENDPOINT, names=["a", "b", "c"], nonce=first.nonce,
                     version=first.version)
    assert d.respond  # a new name was added
    second = s.plan(assignments("a", "b", "c"))
    assert [r.name for r in second.resources] == ["c"]
    s.sent(second, 1.0)
    changed = ResourceSet.of(types.ENDPOINT, [
        *assignments("a", "c").resources.values(),
        *assignments("b", tag="-new").resources.values(),
    ])
    third = s.plan(changed)
    assert [r.name for r in third.resources] == ["b"]


def test_sotw_empty_names_for_non_wildcard_type_unsubscribes():
    s = Session(Mode.SOTW)
    sotw_request(s, types.ENDPOINT, names=["a"])
    r = s.plan(assignments("a"))
    s.sent(r, 1.0)
    d = sotw_request(s, types.ENDPOINT, names=[], nonce=r.nonce, version=r.version)
    assert d.outcome is Outcome.UNSUBSCRIBE
    assert types.ENDPOINT not in s.watches


def test_sotw_legacy_wildcard_rules():
    s = Session(Mode.SOTW)
    sotw_request(s, types.LISTENER, names=[])
    assert s.watches[types.LISTENER].wildcard
    s2 = Session(Mode.SOTW)
    sotw_request(s2, types.LISTENER, names=["x"])
    assert not s2.watches[types.LISTENER].wildcard
    s3 = Session(Mode.SOTW)
    sotw_request(s3, types.LISTENER, names=["*", "x"])
    assert s3.watches[types.LISTENER].wildcard


def test_new_cluster_watch_makes_next_endpoints_request_answered():
    s = Session(Mode.SOTW)
    sotw_request(s, types.ENDPOINT, names=["a"])
    r = s.plan(assignments("a"))
    s.sent(r, 1.0)
    sotw_request(s, types.CLUSTER)  # e.g. the cluster watch is re-created
    d = sotw_request(s, types.ENDPOINT, names=["a"], nonce=r.nonce, version=r.version)
    assert d.respond
    again = s.plan(assignments("a"))
    assert [x.name for x in again.resources] == ["a"]


def test_invalidate_forces_resend_of_unchanged_assignment():
    s = Session(Mode.DELTA)
    delta_request(s, types.ENDPOINT, sub=["a", "b"])
    r = s.plan(assignments("a", "b"))
    s.sent(r, 1.0)
    assert s.plan(assignments("a", "b")) is None
    s.invalidate(types.ENDPOINT, ["a", "zzz"])
    again = s.plan(assignments("a", "b"))
    assert [x.name for x in again.resources] == ["a"]


def test_delta_wildcard_sends_changes_and_removals():
    s = Session(Mode.DELTA)
    d = delta_request(s, types.CLUSTER)
    assert d.outcome is Outcome.INITIAL and s.watches[types.CLUSTER].wildcard
    first = s.plan(clusters("a", "b"))
    s.sent(first, 1.0)
    delta_request(s, types.CLUSTER, nonce=first.nonce)
    second = s.plan(ResourceSet.of(types.CLUSTER, [
        *clusters("a").resources.values(), *clusters("c").resources.values()
    ]))
    assert [r.name for r in second.resources] == ["c"]
    assert second.removed == ("b",)


def test_delta_first_response_is_sent_even_when_empty():
    s = Session(Mode.DELTA)
    delta_request(s, types.LISTENER)
    response = s.plan(ResourceSet(types.LISTENER, {}))
    assert response is not None and response.resources == () and response.removed == ()


def test_delta_initial_resource_versions_skip_unchanged():
    current = clusters("a", "b")
    known = {"a": current.resources["a"].version, "b": "old", "gone": "x"}
    s = Session(Mode.DELTA)
    delta_request(s, types.CLUSTER, initial=known)
    response = s.plan(current)
    assert [r.name for r in response.resources] == ["b"]
    assert response.removed == ("gone",)


def test_delta_subscription_change_honoured_with_stale_nonce():
    s = Session(Mode.DELTA)
    delta_request(s, types.ENDPOINT, sub=["a"])
    one = s.plan(assignments("a", "b"))
    s.sent(one, 1.0)
    two_set = assignments("a", "b", tag="x")
    two = s.plan(two_set)
    s.sent(two, 1.0)
    d = delta_request(s, types.ENDPOINT, sub=["b"], nonce=one.nonce)
    assert d.outcome is Outcome.STALE and d.respond
    assert s.watches[types.ENDPOINT].nonce_acked == ""  # a stale nonce is not an ACK
    three = s.plan(two_set)
    assert [r.name for r in three.resources] == ["b"]


def test_delta_missing_subscribed_name_reported_once_as_removed():
    s = Session(Mode.DELTA)
    delta_request(s, types.ROUTE, sub=["80", "nope"])
    routes = ResourceSet.of(types.ROUTE, [])
    first = s.plan(routes)
    assert set(first.removed) == {"80", "nope"}
    s.sent(first, 1.0)
    assert s.plan(routes) is None


def test_delta_unsubscribe_is_not_answered_and_resubscribe_resends():
    s = Session(Mode.DELTA)
    delta_request(s, types.ENDPOINT, sub=["a"])
    current = assignments("a")
    r = s.plan(current)
    s.sent(r, 1.0)
    d = delta_request(s, types.ENDPOINT, unsub=["a"])
    assert not d.respond
    assert s.plan(current) is None
    delta_request(s, types.ENDPOINT, sub=["a"])
    again = s.plan(current)
    assert [x.name for x in again.resources] == ["a"]


def test_delta_nack_with_stale_nonce_is_not_recorded():
    s = Session(Mode.DELTA)
    delta_request(s, types.CLUSTER)
    one = s.plan(clusters("a"))
    s.sent(one, 1.0)
    two = s.plan(clusters("a", "b"))
    s.sent(two, 1.0)
    d = delta_request(s, types.CLUSTER, nonce=one.nonce, error="old problem")
    assert d.outcome is Outcome.STALE
    assert s.watches[types.CLUSTER].last_error == ""


def test_nonces_are_unique_per_session():
    s = Session(Mode.SOTW, nonce_prefix="p/")
    sotw_request(s, types.CLUSTER)
    a = s.plan(clusters("a"))
    s.sent(a, 1.0)
    b = s.plan(clusters("b"))
    assert a.nonce != b.nonce and a.nonce.startswith("p/")


def test_incremental_plan_uses_the_sets_difference():
    s = Session(Mode.DELTA)
    delta_request(s, types.ENDPOINT, sub=["a", "b", "c"])
    first = assignments("a", "b", "c")
    r = s.plan(first)
    s.sent(r, 1.0)
    second = ResourceSet.of(types.ENDPOINT, [
        *assignments("a", "c").resources.values(),
        *assignments("b", tag="-new").resources.values(),
    ]).since(first)
    assert second.base == first.version and second.changed == {"b"}
    update = s.plan(second)
    assert [x.name for x in update.resources] == ["b"] and update.removed == ()
    s.sent(update, 2.0)
    third = assignments("a", "b", tag="-new").since(second)
    assert third.removed == {"c"}
    update = s.plan(third)
    assert [x.name for x in update.resources] == ["a"] and update.removed == ("c",)


def test_client_behind_the_base_gets_a_full_comparison():
    s = Session(Mode.SOTW)
    sotw_request(s, types.ENDPOINT, names=["a", "b"])
    first = assignments("a", "b")
    # The client never received `first`: a set based on it must not be planned as a diff.
    second = assignments("a", "b", tag="x").since(first)
    response = s.plan(second)
    assert sorted(x.name for x in response.resources) == ["a", "b"]


def test_client_a_push_passed_over_gets_the_differences_since_what_it_holds():
    # Pushes merge while a client waits: it may be two or more sets behind. The sets keep
    # their differences from the last few, so its plan still looks at those names only.
    s = Session(Mode.DELTA)
    delta_request(s, types.ENDPOINT, sub=["a", "b", "c", "d"])
    first = assignments("a", "b", "c", "d")
    s.sent(s.plan(first), 1.0)
    second = ResourceSet.of(types.ENDPOINT, [  # b changes, d goes
        *assignments("a", "c").resources.values(),
        *assignments("b", tag="-2").resources.values(),
    ]).since(first)
    third = ResourceSet.of(types.ENDPOINT, [  # c changes, d comes back
        *assignments("a", "d").resources.values(),
        *assignments("b", tag="-2").resources.values(),
        *assignments("c", tag="-3").resources.values(),
    ]).since(second)
    assert third.difference(first.version) == ({"b", "c", "d"}, frozenset())
    assert third.difference(second.version) == ({"c", "d"}, frozenset())
    fourth = ResourceSet.of(types.ENDPOINT, [  # c and d go
        *assignments("a").resources.values(),
        *assignments("b", tag="-2").resources.values(),
    ]).since(third)
    assert fourth.difference(first.version) == ({"b"}, {"c", "d"})
    update = s.plan(fourth)
    assert [x.name for x in update.resources] == ["b"]
    assert update.removed == ("c", "d")
    assert fourth.difference("some other version") is None


def test_sotw_ack_with_the_same_names_key_is_not_read_again():
    s = Session(Mode.SOTW)
    names = [f"n{k}" for k in range(20)]
    s.receive_sotw(types.ENDPOINT, names, "", "", None, 1.0, names_key=7)
    r = s.plan(assignments(*names))
    s.sent(r, 1.0)

    class Unread(list):
        def __iter__(self):
            raise AssertionError("names read although the key says they repeat")

    decision = s.receive_sotw(types.ENDPOINT, Unread(names), r.nonce, r.version, None, 2.0,
                              names_key=7)
    assert decision.outcome is Outcome.ACK and not decision.respond
    # Another key: the names are read, and a new one is answered.
    decision = s.receive_sotw(types.ENDPOINT, [*names, "extra"], r.nonce, r.version, None, 3.0,
                              names_key=8)
    assert decision.respond and "extra" in s.watches[types.ENDPOINT].names
