"""Choosing an upstream host, sans-IO: load balancing over a cluster's healthy endpoints.

First the priority, as Envoy does: each priority's health is the share of its hosts that
are usable (EDS healthy or unknown, and not ejected by outlier detection) times the
overprovisioning factor 1.4, at most 100%; priority 0 takes as much of the load as its
health, priority 1 the next part of what is left, and so on (scaled up when the priorities
together are under 100%). A priority at 72% healthy or better keeps all its traffic.
When the priorities together are under 100% (Envoy's normalized total availability), a
priority whose usable share is below the cluster's panic threshold (``healthy_panic_
threshold``, 50% unless set; 0 turns panic off) is in panic: its traffic goes to all its
hosts, usable or not; with no usable host anywhere, the first priority panics.

Then, with ``locality_weighted_lb_config``, the locality: by its ``load_balancing_weight``
times its own availability (the same 1.4 rule), at random. Then the host: round robin and
random as Envoy's; least request as Envoy's power of two choices (two hosts drawn at
random, the one with fewer active requests wins); RING_HASH and MAGLEV by the request's
hash (``hashing``), a table per set of usable hosts (a request without a hash gets a
random one, as in Envoy). With slow start (``slow_start_config``, Istio's
``warmupDurationSecs``/``warmup``), a round robin or least request host that joined within
the window is picked less, its share scaled by ``(time in / window) ** (1 / aggression)``
and at least ``min_weight_percent`` (10% unless set): while any host warms up, hosts are
drawn at random by those weights. Hosts present when the balancer was made are not new.
Hosts a retry should avoid (``previous_hosts``) are skipped
while others are left; hashed, the table is walked on to the next host.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from pilotfish.core.native import breakers, hashing, outlier
from pilotfish.core.native.config import Cluster, Endpoint, SlowStart

OVERPROVISIONING = 1.4  # Envoy's default overprovisioning factor
HASHED = frozenset({"RING_HASH", "MAGLEV"})
TABLES_KEPT = 8  # hash tables kept per cluster (host sets seen lately)

Host = tuple[str, int]


def _host(endpoint: Endpoint) -> Host:
    return endpoint.host, endpoint.port


def _availability(usable: int, total: int) -> float:
    return min(1.0, OVERPROVISIONING * usable / total) if total else 0.0


def _total_availability(endpoints: Sequence[Endpoint], usable: Collection[Host]) -> float:
    """Envoy's normalized total availability: the priorities' health summed, at most 100."""
    totals: dict[int, list[int]] = {}
    for endpoint in endpoints:
        counts = totals.setdefault(endpoint.priority, [0, 0])
        counts[1] += 1
        counts[0] += _host(endpoint) in usable
    return min(100.0, sum(100.0 * _availability(*counts) for counts in totals.values()))


def priority_load(endpoints: Sequence[Endpoint], usable: Collection[Host]
                  ) -> list[tuple[int, float]]:
    """Each priority's share of the traffic, in percent (Envoy's priority load)."""
    totals: dict[int, list[int]] = {}
    for endpoint in endpoints:
        counts = totals.setdefault(endpoint.priority, [0, 0])
        counts[1] += 1
        if _host(endpoint) in usable:
            counts[0] += 1
    health = [(p, 100.0 * _availability(*totals[p])) for p in sorted(totals)]
    total = min(100.0, sum(h for _, h in health))
    if not total:
        return []
    loads = []
    left = 100.0
    for priority, value in health:
        share = min(left, value * 100.0 / total)
        left -= share
        loads.append((priority, share))
    return loads


def _choose(loads: list[tuple[int, float]], draw: float) -> int:
    for priority, share in loads:
        if draw < share:
            return priority
        draw -= share
    return next(p for p, share in reversed(loads) if share > 0)


# A dataclass, not attrs: compiled (compiled.py), mypyc makes it a native class.
@dataclass(slots=True)
class Balancer:
    """One cluster's balancing state (its round-robin position, active requests, hash
    tables)."""

    policy: str
    locality_weighted: bool = False
    ring_min: int = hashing.RING_MIN
    ring_max: int = hashing.RING_MAX
    table_size: int = hashing.MAGLEV_SIZE
    panic: float = 50.0  # percent of usable hosts under which a priority panics (0: never)
    slow_start: SlowStart | None = None
    position: int = 0
    active: dict[Host, int] = field(default_factory=dict)
    tables: dict[tuple[tuple[Host, float], ...], hashing.Ring | hashing.Maglev] = \
        field(default_factory=dict)
    # the priorities' loads and usable hosts, kept while the endpoints and ejections last
    # (they change with EDS and outlier detection, not with each request)
    plan_for: tuple[Any, frozenset[Host]] | None = field(init=False)
    joined: dict[Host, float] = field(init=False)  # slow start: since when
    plan: tuple[list[tuple[int, float]], dict[int, tuple[list[Endpoint], list[Endpoint]]]] \
        = field(init=False)

    def __post_init__(self) -> None:
        # Set here, not as defaults: compiled (mypyc), a class's defaults are not its
        # instances' for fields outside __init__.
        self.plan_for = None
        self.joined = {}
        self.plan = ([], {})

    def _planned(self, endpoints: Sequence[Endpoint], excluded: Collection[Host]
                 ) -> tuple[list[tuple[int, float]],
                            dict[int, tuple[list[Endpoint], list[Endpoint]]]]:
        if self.plan_for is not None and self.plan_for[0] is endpoints and \
                self.plan_for[1] == excluded:
            return self.plan
        usable = {_host(e) for e in endpoints if e.healthy and _host(e) not in excluded}
        loads = priority_load(endpoints, usable)
        if not loads and endpoints and self.panic > 0:  # nothing usable: panic in the first
            loads = [(min(e.priority for e in endpoints), 100.0)]
        short = self.panic > 0 and _total_availability(endpoints, usable) < 100.0
        levels = {}
        for priority, _ in loads:
            level = [e for e in endpoints if e.priority == priority]
            hosts = [e for e in level if _host(e) in usable]
            if short and 100.0 * len(hosts) / len(level) < self.panic:
                hosts = level  # panic: every host of the priority, usable or not
            levels[priority] = (level, hosts)
        self.plan_for, self.plan = (endpoints, frozenset(excluded)), (loads, levels)
        return self.plan

    def pick(self, endpoints: Sequence[Endpoint], avoid: Collection[Host] = (),
             rng: random.Random | None = None, hash_key: int | None = None,
             excluded: Collection[Host] = (), now: float = 0.0) -> Endpoint | None:
        """A host for one request; ``excluded`` are the hosts outlier detection ejected."""
        draw = rng or random
        loads, levels = self._planned(endpoints, excluded)
        if not loads:
            return None
        if self.policy in HASHED and hash_key is None:
            hash_key = draw.getrandbits(64)
        priority = loads[0][0] if len(loads) == 1 else _choose(
            loads, hash_key % 100 if hash_key is not None else draw.random() * 100)
        level, hosts = levels[priority]
        if self.policy in HASHED and hash_key is not None:
            return self._hashed(level, hosts, hash_key, avoid)
        if self.locality_weighted:
            hosts = self._locality(level, hosts, draw)
        if avoid:
            hosts = [e for e in hosts if _host(e) not in avoid] or hosts
        if self.slow_start is not None and len(hosts) > 1:
            weights = self._warming(hosts, now)
            if weights is not None:
                return draw.choices(hosts, weights)[0]
        if self.policy == "RANDOM" or len(hosts) == 1:
            return hosts[draw.randrange(len(hosts))] if len(hosts) > 1 else hosts[0]
        if self.policy == "LEAST_REQUEST":
            first, second = draw.sample(hosts, 2)
            return first if self.active.get(_host(first), 0) <= \
                self.active.get(_host(second), 0) else second
        self.position = (self.position + 1) % len(hosts)
        return hosts[self.position]

    def _warming(self, hosts: Sequence[Endpoint], now: float) -> list[float] | None:
        """Slow start's weights of ``hosts``, or None when none of them is warming up."""
        assert self.slow_start is not None
        window = self.slow_start.window
        if not self.joined:  # the hosts there at the start are not new
            self.joined = {_host(e): now - window for e in hosts}
        elif len(self.joined) > 2 * len(hosts) + 64:  # hosts gone long since: forgotten
            self.joined = {_host(e): self.joined.get(_host(e), now) for e in hosts}
        weights, warming = [], False
        for endpoint in hosts:
            since = now - self.joined.setdefault(_host(endpoint), now)
            if since >= window:
                weights.append(1.0)
                continue
            warming = True
            share = max(since, 0.0) / window
            weights.append(max(self.slow_start.min_weight,
                               share ** (1.0 / self.slow_start.aggression)))
        return weights if warming else None

    def _locality(self, level: Sequence[Endpoint], hosts: list[Endpoint],
                  draw: random.Random | Any) -> list[Endpoint]:
        groups: dict[str, list[Endpoint]] = {}
        for endpoint in hosts:
            groups.setdefault(endpoint.locality, []).append(endpoint)
        weights = []
        for locality, members in groups.items():
            total = sum(1 for e in level if e.locality == locality)
            weights.append(members[0].locality_weight * _availability(len(members), total))
        if not any(weights):
            return hosts
        return draw.choices(list(groups.values()), weights)[0]

    def _weights(self, level: Sequence[Endpoint], hosts: Sequence[Endpoint]
                 ) -> list[tuple[Host, float]]:
        if not self.locality_weighted:
            return [(_host(e), float(e.weight)) for e in hosts]
        localities: dict[str, int] = {}
        inside: dict[str, int] = {}
        for endpoint in hosts:
            localities[endpoint.locality] = endpoint.locality_weight
            inside[endpoint.locality] = inside.get(endpoint.locality, 0) + endpoint.weight
        total = sum(localities.values()) or 1
        return [(_host(e), localities[e.locality] / total * e.weight /
                 (inside[e.locality] or 1)) for e in hosts]

    def _hashed(self, level: Sequence[Endpoint], hosts: Sequence[Endpoint], key: int,
                avoid: Collection[Host]) -> Endpoint | None:
        weighted = self._weights(level, hosts)
        index = tuple(sorted(weighted))
        table = self.tables.get(index)
        if table is None:
            table = hashing.Maglev.build(weighted, self.table_size) \
                if self.policy == "MAGLEV" else \
                hashing.Ring.build(weighted, self.ring_min, self.ring_max)
            while len(self.tables) >= TABLES_KEPT:
                del self.tables[next(iter(self.tables))]
            self.tables[index] = table
        found = table.lookup(key, set(avoid))
        return next((e for e in hosts if _host(e) == found), None)

    def started(self, host: Host) -> None:
        self.active[host] = self.active.get(host, 0) + 1

    def finished(self, host: Host) -> None:
        left = self.active.get(host, 1) - 1
        if left:
            self.active[host] = left
        else:
            self.active.pop(host, None)


# A dataclass, not attrs: compiled (compiled.py), mypyc makes it a native class.
@dataclass(slots=True)
class Upstream:
    """One cluster's upstream state: its balancer, circuit breaker and outlier detector,
    made for one version of the cluster (a changed cluster starts afresh, as in Envoy)."""

    cluster: Cluster
    balancer: Balancer
    breaker: breakers.Breaker
    detector: outlier.Detector | None = None

    @classmethod
    def of(cls, cluster: Cluster, rng: random.Random | None = None) -> Upstream:
        balancer = Balancer(cluster.lb, cluster.locality_weighted, *cluster.ring_size,
                            table_size=cluster.maglev_size, panic=cluster.panic_threshold,
                            slow_start=cluster.slow_start)
        detector = outlier.Detector(cluster.outlier_detection, rng or random.Random()) \
            if cluster.outlier_detection is not None else None
        return cls(cluster, balancer, breakers.Breaker(cluster.limits), detector)

    def pick(self, endpoints: Sequence[Endpoint], now: float, avoid: Collection[Host] = (),
             rng: random.Random | None = None, hash_key: int | None = None
             ) -> Endpoint | None:
        excluded: frozenset[Host] = frozenset()
        if self.detector is not None:
            self.detector.refresh(now, {_host(e) for e in endpoints})
            excluded = self.detector.ejected()
        return self.balancer.pick(endpoints, avoid, rng, hash_key, excluded, now)
