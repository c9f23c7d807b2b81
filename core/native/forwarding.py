"""What the two ways of serving an HTTP/1.1 request share once it is routed: the plan
(`Plan`: the route's cluster and the request as it goes upstream), why a try failed
(`UpstreamFailed`), and what the callback path hands the serving task when it cannot finish
a request itself (`Handed`: the plan, and how its first try went).

The task path (`NativeProxy._respond` and the coroutines under it) serves every request;
the callback path (`fast_path.FastServer`) serves the common one from the protocols'
callbacks and gives the task the rest part way, so retries, timeouts and streamed answers
are decided in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pilotfish.core.native import http1, routing
from pilotfish.core.native.config import Cluster


class UpstreamFailed(Exception):
    """No response came: the reason, as Envoy words it in its 503 body."""

    def __init__(self, reason: str, sent: bool, flag: str = "UF") -> None:
        super().__init__(reason)
        self.sent = sent  # the request may have reached the upstream
        self.flag = flag  # the response flag: UF, or UO for a circuit breaker's overflow


# A dataclass, not attrs: compiled (compiled.py), mypyc makes it a native class.
@dataclass(slots=True)
class Plan:
    """A request routed to a cluster: what to send, and what its answer gets."""

    decision: routing.Decision
    action: routing.Forward
    cluster: Cluster
    outgoing: http1.Message  # the request as it goes upstream (the route's edits made)
    added: Sequence[tuple[str, str]]  # what the filters add to the answer
    flags: str  # the response flags so far ("-", or a fault's delay)
    started: float  # when routing began (monotonic), for x-envoy-upstream-service-time

    @property
    def route(self) -> str:
        return self.decision.route.name


def speaks_h2(cluster: Cluster, request: http1.Message) -> bool:
    """Whether ``request`` goes to ``cluster``'s hosts over HTTP/2."""
    return cluster.protocol == "h2" or (cluster.protocol == "downstream" and
                                        request.version == "2")


def try_limit(timeout: float, per_try: float) -> float:
    """How long one try may wait for its answer (0: no limit): the route's timeout, or
    its per-try timeout when that is shorter."""
    return min(timeout, per_try) if timeout and per_try else timeout or per_try


# How a try ended: the answer and its host, or the failure.
Tried = tuple[http1.Message, tuple[str, int]] | UpstreamFailed


# A dataclass, not attrs: compiled (compiled.py), mypyc makes it a native class.
@dataclass(slots=True)
class Handed:
    """A request the callback path routed (and perhaps tried once) and the serving task
    finishes: ``first`` is the first try's end (None: not tried), ``tried`` the hosts it
    used, ``started`` the request's start (wall clock, for the access log)."""

    request: http1.Message
    plan: Plan
    started: float
    first: Tried | None = None
    tried: set[tuple[str, int]] = field(default_factory=set)
