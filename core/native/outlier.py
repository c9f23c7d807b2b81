"""Outlier detection, sans-IO: Envoy's consecutive-error detectors for one cluster.

Each result of a request to a host is reported with the time: an HTTP status, or a
local-origin event (connect failure, timeout, reset before a response; a connection made).
A host that reaches a detector's count of consecutive errors is ejected, as Envoy does,
when the ejection is enforced (``enforcing_*`` percent of the time) and, with it, no more
than ``max_ejection_percent`` of the cluster's hosts would be out (else
``ejections_overflow``). Without ``split_external_local_origin_errors`` a local-origin
failure counts as the HTTP status Envoy maps it to (503, a timeout 504); with it, those
count only towards ``consecutive_local_origin_failure``.

An ejected host stays out for ``base_ejection_time`` times its ejection count (at most
``max_ejection_time``), looked at every ``interval``; each interval a host spends back in
lowers that count again. The interval runs on the times passed in (``refresh``), not on a
timer: the proxy calls it as it picks hosts.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Collection

import attrs

Host = tuple[str, int]
GATEWAY_ERRORS = frozenset({502, 503, 504})


@attrs.frozen
class Outlier:
    """``Cluster.outlier_detection``, with Envoy's defaults."""

    consecutive_5xx: int = 5
    consecutive_gateway_failure: int = 5
    consecutive_local_origin_failure: int = 5
    enforcing_consecutive_5xx: int = 100
    enforcing_consecutive_gateway_failure: int = 0
    enforcing_consecutive_local_origin_failure: int = 100
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 10
    split_external_local_origin_errors: bool = False


@attrs.define
class HostState:
    ejected_at: float | None = None
    backoff: int = 0  # ejection time multiplier: up with each ejection, down while in
    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    consecutive_local: int = 0

    def reset(self) -> None:
        self.consecutive_5xx = self.consecutive_gateway = self.consecutive_local = 0


@attrs.define
class Detector:
    config: Outlier
    rng: random.Random = attrs.field(factory=random.Random)
    hosts: dict[Host, HostState] = attrs.field(factory=dict)
    stats: Counter[str] = attrs.field(factory=Counter)  # under outlier_detection.
    next_check: float | None = None

    # -- what happened --------------------------------------------------------------------

    def http_status(self, host: Host, status: int, now: float, size: int) -> None:
        """A response from ``host``; ``size`` is how many hosts the cluster has."""
        state = self.hosts.setdefault(host, HostState())
        if status < 500:
            state.consecutive_5xx = state.consecutive_gateway = 0
            return
        if status in GATEWAY_ERRORS:
            state.consecutive_gateway += 1
            if state.consecutive_gateway >= self.config.consecutive_gateway_failure:
                self._detected(host, state, "consecutive_gateway_failure", now, size)
        else:
            state.consecutive_gateway = 0
        state.consecutive_5xx += 1
        if state.consecutive_5xx >= self.config.consecutive_5xx:
            self._detected(host, state, "consecutive_5xx", now, size)

    def local_failure(self, host: Host, now: float, size: int, timeout: bool = False) -> None:
        """The connection failed, timed out or was reset before a response."""
        if not self.config.split_external_local_origin_errors:
            self.http_status(host, 504 if timeout else 503, now, size)
            return
        state = self.hosts.setdefault(host, HostState())
        state.consecutive_local += 1
        if state.consecutive_local >= self.config.consecutive_local_origin_failure:
            self._detected(host, state, "consecutive_local_origin_failure", now, size)

    def local_success(self, host: Host) -> None:
        """A connection to ``host`` was made."""
        state = self.hosts.get(host)
        if state is not None and self.config.split_external_local_origin_errors:
            state.consecutive_local = 0

    # -- ejection ---------------------------------------------------------------------------

    def _detected(self, host: Host, state: HostState, kind: str, now: float,
                  size: int) -> None:
        if state.ejected_at is not None:
            return
        self.stats[f"ejections_detected_{kind}"] += 1
        self._eject(host, state, kind, now, size)
        if kind == "consecutive_5xx":
            state.consecutive_5xx = 0
        elif kind == "consecutive_gateway_failure":
            state.consecutive_gateway = 0
        else:
            state.consecutive_local = 0

    def _eject(self, host: Host, state: HostState, kind: str, now: float, size: int) -> None:
        # as Envoy counts it, with the host about to go: 3 hosts at the default 10% keep all
        if size and 100.0 * (self.ejections_active + 1) / size > \
                self.config.max_ejection_percent:
            self.stats["ejections_overflow"] += 1
            return
        enforcing = getattr(self.config, f"enforcing_{kind}")
        if enforcing < 100 and self.rng.randrange(100) >= enforcing:
            return
        state.ejected_at = now
        if self.config.base_ejection_time * state.backoff < max(
                self.config.max_ejection_time, self.config.base_ejection_time):
            state.backoff += 1
        self.stats["ejections_enforced_total"] += 1
        self.stats[f"ejections_enforced_{kind}"] += 1
        if self.next_check is None:
            self.next_check = now + self.config.interval

    def ejection_time(self, state: HostState) -> float:
        base = self.config.base_ejection_time
        return min(base * state.backoff, max(self.config.max_ejection_time, base))

    def refresh(self, now: float, present: Collection[Host] | None = None) -> None:
        """Run the interval checks due by ``now``: hosts whose time is up come back, the
        others' backoff comes down; hosts no longer in the cluster (``present``) are
        forgotten."""
        if present is not None:
            for host in [h for h in self.hosts if h not in present]:
                del self.hosts[host]
        if self.next_check is None:
            if any(s.backoff for s in self.hosts.values()):
                self.next_check = now + self.config.interval
            return
        if now < self.next_check:
            return
        interval = self.config.interval
        ticks = int((now - self.next_check) // interval) + 1  # checks due (one per interval)
        at = self.next_check + (ticks - 1) * interval
        for state in self.hosts.values():
            if state.ejected_at is None:
                state.backoff = max(0, state.backoff - ticks)
            elif at - state.ejected_at >= self.ejection_time(state):
                state.ejected_at = None
                state.reset()
        self.next_check = at + interval if any(
            s.backoff or s.ejected_at is not None for s in self.hosts.values()) else None

    @property
    def ejections_active(self) -> int:
        return sum(1 for s in self.hosts.values() if s.ejected_at is not None)

    def ejected(self) -> frozenset[Host]:
        return frozenset(h for h, s in self.hosts.items() if s.ejected_at is not None)

    def statistics(self) -> dict[str, int]:
        """Envoy's ``outlier_detection.*`` counters, and the ``ejections_active`` gauge."""
        return {**self.stats, "ejections_active": self.ejections_active}
