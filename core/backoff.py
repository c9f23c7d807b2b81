"""Jittered, capped exponential backoff between retries (sans-IO: the caller draws).

Each wait is the current interval randomized by ``±randomization`` (so that a fleet that
lost its peer at the same moment does not come back in lockstep), never above
``maximum``; the interval then grows by ``multiplier`` up to ``maximum``. A success
resets it. Users pick their peer's defaults: the agent's CA client Istio's ``pkg/backoff``
(0.5 s, 1.5x, 60 s), the Kubernetes source client-go's reflector (0.8 s, 2x, 30 s).
"""

from __future__ import annotations

import attrs


@attrs.define
class Backoff:
    initial: float = 0.5
    maximum: float = 60.0
    multiplier: float = 1.5
    randomization: float = 0.5
    interval: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.interval = self.initial

    def next(self, draw: float) -> float:
        """The wait before the next attempt (``draw`` in [0, 1)); grows the interval."""
        delay = self.interval * (1 + self.randomization * (2 * draw - 1))
        self.interval = min(self.interval * self.multiplier, self.maximum)
        return min(delay, self.maximum)

    def reset(self) -> None:
        self.interval = self.initial
