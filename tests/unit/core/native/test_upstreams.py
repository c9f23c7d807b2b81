"""Choosing upstream hosts as Envoy does, without sockets: consistent hashing (stable keys,
minimal disruption), priorities and the 1.4 overprovisioning rule, locality weights."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from pilotfish.core.native import hashing
from pilotfish.core.native.config import Endpoint
from pilotfish.core.native.upstreams import Balancer, priority_load


def hosts(count: int, **fields: object) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i + 1}", 8080, **fields) for i in range(count)]  # type: ignore[arg-type]


def where(endpoint: Endpoint | None) -> str:
    assert endpoint is not None
    return endpoint.host


KEYS = [hashing.hash64(f"user-{i}") for i in range(3000)]


@pytest.mark.parametrize("policy", ["RING_HASH", "MAGLEV"])
def test_the_same_key_goes_to_the_same_host(policy: str) -> None:
    endpoints = hosts(5)
    first, second = Balancer(policy), Balancer(policy)  # two processes, one answer
    for key in KEYS[:200]:
        assert where(first.pick(endpoints, hash_key=key)) == \
            where(second.pick(endpoints, hash_key=key)) == \
            where(first.pick(endpoints, hash_key=key))


@pytest.mark.parametrize("policy", ["RING_HASH", "MAGLEV"])
def test_keys_spread_over_hosts_by_weight(policy: str) -> None:
    endpoints = hosts(3)
    endpoints[0] = Endpoint("10.0.0.1", 8080, weight=2)
    balancer = Balancer(policy)
    spread = Counter(where(balancer.pick(endpoints, hash_key=k)) for k in KEYS)
    assert 0.4 < spread["10.0.0.1"] / len(KEYS) < 0.6
    assert 0.18 < spread["10.0.0.2"] / len(KEYS) < 0.32


@pytest.mark.parametrize(("policy", "strays"), [("RING_HASH", 0.0), ("MAGLEV", 0.05)])
def test_removing_a_host_moves_only_its_keys(policy: str, strays: float) -> None:
    endpoints = hosts(5)
    balancer = Balancer(policy)
    before = {k: where(balancer.pick(endpoints, hash_key=k)) for k in KEYS}
    gone = "10.0.0.3"
    after = {k: where(balancer.pick([e for e in endpoints if e.host != gone], hash_key=k))
             for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] != gone for k in KEYS)
    assert {k for k in KEYS if before[k] == gone} <= set(moved)  # its keys moved
    others = [k for k in moved if before[k] != gone]  # and (nearly) only its keys
    assert len(others) <= strays * len(KEYS)
    # an ejected host (excluded) moves the same keys as one removed
    assert {k: where(balancer.pick(endpoints, hash_key=k, excluded={(gone, 8080)}))
            for k in KEYS} == after


def test_ring_size_follows_the_minimum_and_the_maximum() -> None:
    ring = hashing.Ring.build([(("a", 1), 1.0), (("b", 1), 1.0)], minimum=64)
    assert ring.hosts.count(("a", 1)) == ring.hosts.count(("b", 1)) == 64
    ring = hashing.Ring.build([(("a", 1), 1000.0), (("b", 1), 1.0)], minimum=64)
    assert ring.hosts.count(("b", 1)) == 1
    ring = hashing.Ring.build([((str(i), 1), 1.0) for i in range(10)], minimum=64,
                              maximum=320)
    assert len(ring.hosts) == 320


def test_a_hashed_retry_that_avoids_hosts_walks_on() -> None:
    endpoints = hosts(3)
    balancer = Balancer("RING_HASH")
    first = where(balancer.pick(endpoints, hash_key=KEYS[0]))
    second = where(balancer.pick(endpoints, {(first, 8080)}, hash_key=KEYS[0]))
    assert second != first


def test_a_request_without_a_hash_gets_any_host() -> None:
    rng = random.Random(7)
    seen = {where(Balancer("RING_HASH").pick(hosts(3), rng=rng)) for _ in range(60)}
    assert len(seen) == 3


def test_request_keys_from_headers_cookies_source_and_query() -> None:
    header = (hashing.HashPolicy("header", "x-user"),)
    assert hashing.request_key(header, [("x-user", "ann")]).hash == hashing.hash64("ann")
    assert hashing.request_key(header, [("other", "1")]).hash is None
    query = (hashing.HashPolicy("query_parameter", "u"),)
    assert hashing.request_key(query, [], "/p?a=1&u=bob").hash == hashing.hash64("bob")
    source = (hashing.HashPolicy("source_ip"),)
    assert hashing.request_key(source, [], source="10.1.2.3:5555").hash == \
        hashing.request_key(source, [], source="10.1.2.3").hash == \
        hashing.hash64("10.1.2.3")
    assert hashing.request_key(source, [], source="[fd00::1]:80").hash == \
        hashing.request_key(source, [], source="fd00::1").hash == hashing.hash64("fd00::1")
    cookie = (hashing.HashPolicy("cookie", "sticky"),)
    assert hashing.request_key(cookie, [("cookie", "a=1; sticky=xyz")]).hash == \
        hashing.hash64("xyz")
    assert hashing.request_key(cookie, []) == hashing.RequestKey(None)
    # several policies combine; a terminal one that hashed ends the list
    both = (hashing.HashPolicy("header", "x-user", terminal=True),
            hashing.HashPolicy("query_parameter", "u"))
    assert hashing.request_key(both, [("x-user", "ann")], "/?u=bob").hash == \
        hashing.hash64("ann")
    assert hashing.request_key(both[1:] + both[:1], [("x-user", "ann")], "/?u=bob").hash \
        not in (hashing.hash64("ann"), hashing.hash64("bob"), None)


def test_a_cookie_with_a_ttl_is_made_when_missing_and_set_in_the_response() -> None:
    policy = (hashing.HashPolicy("cookie", "sticky", ttl=3600.0, path="/app"),)
    made = hashing.request_key(policy, [], source="10.0.0.9:4000", local="10.0.0.1:80")
    assert made.hash is not None
    value = made.set_cookie.split(";")[0].split("=", 1)[1].strip('"')
    assert made.set_cookie == f'sticky="{value}"; Max-Age=3600; Path=/app; HttpOnly'
    # the client sends it back: the same hash, nothing set again
    back = hashing.request_key(policy, [("cookie", f'sticky="{value}"')])
    assert back == hashing.RequestKey(made.hash)
    session = hashing.request_key((hashing.HashPolicy("cookie", "s", ttl=0.0),), [])
    assert session.set_cookie.startswith('s="') and "Max-Age" not in session.set_cookie


def test_priority_load_follows_the_overprovisioning_factor() -> None:
    level0 = hosts(10)
    # 8 of 10 healthy: 8 * 1.4 = 112% → priority 0 keeps all of it
    assert priority_load(level0, {(e.host, e.port) for e in level0[:8]}) == [(0, 100.0)]
    # with a priority 1: 5 of 10 healthy at 0 → 70% stays, 30% spills over
    spill = hosts(10) + [Endpoint(f"10.1.0.{i}", 8080, priority=1) for i in range(10)]
    keep = {(e.host, e.port) for e in spill if e.priority == 1} | {
        (e.host, e.port) for e in spill[:5]}
    loads = priority_load(spill, keep)
    assert [p for p, _ in loads] == [0, 1]
    assert loads[0][1] == pytest.approx(70.0) and loads[1][1] == pytest.approx(30.0)
    # nothing healthy at priority 0: everything to priority 1
    keep = {(e.host, e.port) for e in spill if e.priority == 1}
    assert priority_load(spill, keep) == [(0, 0.0), (1, 100.0)]
    # the priorities together under 100%: scaled up to carry all the traffic
    loads = priority_load(spill, {(e.host, e.port) for e in (spill[:2] + spill[10:12])})
    assert loads[0][1] == pytest.approx(50.0) and loads[1][1] == pytest.approx(50.0)
    assert priority_load(spill, set()) == []


def test_priority_failover_picks_the_next_priority_only_when_needed() -> None:
    near = [Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)]
    far = [Endpoint("10.9.0.1", 80, priority=1)]
    balancer, rng = Balancer("ROUND_ROBIN"), random.Random(1)
    assert {where(balancer.pick(near + far, rng=rng)) for _ in range(50)} == \
        {"10.0.0.1", "10.0.0.2"}
    # one of two ejected: 50% * 1.4 = 70% stays near, 30% goes far
    picks = Counter(where(balancer.pick(near + far, rng=rng, excluded={("10.0.0.1", 80)}))
                    for _ in range(2000))
    assert set(picks) == {"10.0.0.2", "10.9.0.1"}
    assert 0.6 < picks["10.0.0.2"] / 2000 < 0.8
    unhealthy = [Endpoint("10.0.0.1", 80, healthy=False), Endpoint("10.0.0.2", 80,
                                                                   healthy=False)]
    assert {where(balancer.pick(unhealthy + far, rng=rng)) for _ in range(20)} == \
        {"10.9.0.1"}
    # nothing usable anywhere: Envoy's panic (threshold 50% unless set) tries them all;
    # with panic off, there is no host
    assert {where(balancer.pick(unhealthy, rng=rng)) for _ in range(20)} == \
        {"10.0.0.1", "10.0.0.2"}
    assert Balancer("ROUND_ROBIN", panic=0).pick(unhealthy) is None


def test_a_priority_under_its_panic_threshold_uses_every_host() -> None:
    """Three of four ejected (25% usable < 50%), and no other priority to take the
    rest: Envoy balances over all four; at a 20% threshold only the usable one."""
    hosts = [Endpoint(f"10.0.0.{i}", 80) for i in range(4)]
    ejected = {(f"10.0.0.{i}", 80) for i in range(3)}
    rng, balancer = random.Random(2), Balancer("ROUND_ROBIN")
    panicked = {where(balancer.pick(hosts, rng=rng, excluded=ejected)) for _ in range(40)}
    assert len(panicked) == 4
    calm = Balancer("ROUND_ROBIN", panic=20.0)
    assert {where(calm.pick(hosts, rng=rng, excluded=ejected)) for _ in range(40)} == \
        {"10.0.0.3"}


def test_locality_weights_share_the_traffic() -> None:
    """Envoy's documented example: X weight 1, Y weight 2; X half available → 26%."""
    x = [Endpoint(f"10.0.0.{i}", 80, locality="r/x", locality_weight=1) for i in range(4)]
    y = [Endpoint(f"10.0.1.{i}", 80, locality="r/y", locality_weight=2) for i in range(4)]
    balancer, rng = Balancer("ROUND_ROBIN", locality_weighted=True), random.Random(3)

    def share(excluded: set[tuple[str, int]]) -> float:
        picks = [where(balancer.pick(x + y, rng=rng, excluded=excluded)) for _ in range(6000)]
        return sum(1 for p in picks if p.startswith("10.0.0.")) / len(picks)

    assert share(set()) == pytest.approx(1 / 3, abs=0.03)
    assert share({("10.0.0.0", 80), ("10.0.0.1", 80)}) == pytest.approx(0.26, abs=0.03)
    # a locality without a weight gets nothing
    none = [Endpoint("10.0.2.1", 80, locality="r/z")]
    assert all(where(balancer.pick(x + none, rng=rng)) != "10.0.2.1" for _ in range(200))
    # without locality_weighted_lb_config the weights are not looked at
    flat = Balancer("RANDOM")
    picks = [where(flat.pick(x + y, rng=rng)) for _ in range(4000)]
    assert sum(1 for p in picks if p.startswith("10.0.0.")) / 4000 == \
        pytest.approx(0.5, abs=0.04)


def test_hashing_with_locality_weights_scales_host_weights() -> None:
    x = [Endpoint("10.0.0.1", 80, locality="r/x", locality_weight=3)]
    y = [Endpoint(f"10.0.1.{i}", 80, locality="r/y", locality_weight=1) for i in range(3)]
    balancer = Balancer("RING_HASH", locality_weighted=True)
    spread = Counter(where(balancer.pick(x + y, hash_key=k)) for k in KEYS)
    assert spread["10.0.0.1"] / len(KEYS) == pytest.approx(0.75, abs=0.06)


def test_a_new_host_warms_up_over_the_slow_start_window() -> None:
    """Istio's warmupDurationSecs 10s: a host that joins gets at least 10% of its share,
    half of it 5 s in, all of it once the window is over; the first hosts are not new."""
    from pilotfish.core.native.config import SlowStart

    a, b, c = (Endpoint(f"10.0.0.{i}", 80) for i in (1, 2, 3))
    balancer, rng = Balancer("ROUND_ROBIN", slow_start=SlowStart(10.0)), random.Random(4)

    def share_of_c(now: float) -> float:
        picks = [where(balancer.pick([a, b, c], rng=rng, now=now)) for _ in range(4000)]
        return picks.count("10.0.0.3") / len(picks)

    assert {where(balancer.pick([a, b], rng=rng, now=0.0)) for _ in range(4)} == \
        {"10.0.0.1", "10.0.0.2"}  # no one warming: plain round robin
    assert share_of_c(100.0) == pytest.approx(0.1 / 2.1, abs=0.02)  # joins now: the floor
    assert share_of_c(105.0) == pytest.approx(0.5 / 2.5, abs=0.03)
    assert share_of_c(111.0) == pytest.approx(1 / 3, abs=0.03)
