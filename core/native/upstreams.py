"""Choosing an upstream host, sans-IO: load balancing over a cluster's healthy endpoints.

Round robin and random as Envoy's; least request as Envoy's power of two choices (two hosts
drawn at random, the one with fewer active requests wins). Hosts a retry should avoid
(``previous_hosts``) are skipped while others are left.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

import attrs

from pilotfish.core.native.config import Endpoint


@attrs.define
class Balancer:
    """One cluster's balancing state (its round-robin position, active requests)."""

    policy: str
    position: int = 0
    active: dict[tuple[str, int], int] = attrs.field(factory=dict)

    def pick(self, endpoints: Sequence[Endpoint], avoid: Collection[tuple[str, int]] = (),
             rng: random.Random | None = None) -> Endpoint | None:
        healthy = [e for e in endpoints if e.healthy]
        fresh = [e for e in healthy if (e.host, e.port) not in avoid]
        hosts = fresh or healthy
        if not hosts:
            return None
        draw = rng or random
        if self.policy == "RANDOM" or len(hosts) == 1:
            return hosts[draw.randrange(len(hosts))] if len(hosts) > 1 else hosts[0]
        if self.policy == "LEAST_REQUEST":
            first, second = draw.sample(hosts, 2)
            return first if self.active.get((first.host, first.port), 0) <= \
                self.active.get((second.host, second.port), 0) else second
        self.position = (self.position + 1) % len(hosts)
        return hosts[self.position]

    def started(self, host: tuple[str, int]) -> None:
        self.active[host] = self.active.get(host, 0) + 1

    def finished(self, host: tuple[str, int]) -> None:
        left = self.active.get(host, 1) - 1
        if left:
            self.active[host] = left
        else:
            self.active.pop(host, None)
