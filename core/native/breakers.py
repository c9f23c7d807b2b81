"""Circuit breakers, sans-IO: a cluster's limits at the DEFAULT priority and what is in use.

As Envoy's: a request over ``max_requests`` fails at once; a request that needs a new
connection when the cluster has ``max_connections`` open waits for one to come free if
fewer than ``max_pending_requests`` already wait, else fails (``upstream_cx_overflow``,
then ``upstream_rq_pending_overflow``); a host with no connection at all may always open
one (Envoy's rule, so no host's requests wait on others' connections); a retry over
``max_retries`` retries in flight is not made (``upstream_rq_retry_overflow``) — or, with
a ``retry_budget`` (Istio's ``retryBudget``), over ``budget_percent`` of the requests
active and pending, but never under ``min_retry_concurrency``. The failures are local
503s flagged ``UO``.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Limits:
    """``circuit_breakers.thresholds`` at DEFAULT priority; Envoy's defaults."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3
    # retry_budget: (percent of active and pending requests, min retry concurrency)
    retry_budget: tuple[float, int] | None = None


@attrs.define
class Breaker:
    limits: Limits = Limits()
    requests: int = 0
    pending: int = 0
    retries: int = 0

    def start_request(self) -> bool:
        if self.requests >= self.limits.max_requests:
            return False
        self.requests += 1
        return True

    def end_request(self) -> None:
        self.requests = max(0, self.requests - 1)

    def may_connect(self, open_connections: int, open_to_host: int) -> bool:
        return open_connections < self.limits.max_connections or not open_to_host

    def start_pending(self) -> bool:
        if self.pending >= self.limits.max_pending_requests:
            return False
        self.pending += 1
        return True

    def end_pending(self) -> None:
        self.pending = max(0, self.pending - 1)

    def retry_limit(self) -> int:
        budget = self.limits.retry_budget
        if budget is None:
            return self.limits.max_retries
        percent, least = budget
        return max(least, int((self.requests + self.pending) * percent / 100))

    def start_retry(self) -> bool:
        if self.retries >= self.retry_limit():
            return False
        self.retries += 1
        return True

    def end_retry(self) -> None:
        self.retries = max(0, self.retries - 1)

    def statistics(self, open_connections: int) -> dict[str, int]:
        """Envoy's ``circuit_breakers.default.*`` gauges: each breaker open (1) or not,
        and what remains under each limit."""
        limits = self.limits
        used = {"cx": (open_connections, limits.max_connections, "remaining_cx"),
                "rq_pending": (self.pending, limits.max_pending_requests,
                               "remaining_pending"),
                "rq": (self.requests, limits.max_requests, "remaining_rq"),
                "rq_retry": (self.retries, self.retry_limit(), "remaining_retries")}
        out = {}
        for name, (count, limit, remaining) in used.items():
            out[f"{name}_open"] = int(count >= limit)
            out[remaining] = max(0, limit - count)
        return out
