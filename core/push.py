"""Push requests and the debouncer that batches them (Istio's algorithm, sans-IO).

Config events become `PushRequest`s. The debouncer merges them and releases one batch when
the stream of events has been quiet for ``after`` seconds, or when ``max`` seconds passed
since the batch's first event, and only while no push is running: events that arrive
during a push form the next batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import attrs

from pilotfish.core.objects import ConfigKey


@attrs.frozen
class PushRequest:
    # Keys that changed; None means "anything may have changed" (full push).
    changed: frozenset[ConfigKey] | None
    reasons: Counter[str] = attrs.field(factory=Counter, eq=False)
    forced: bool = False
    start: float = 0.0  # when the oldest merged event arrived

    @classmethod
    def for_keys(cls, keys: Iterable[ConfigKey], reason: str, now: float) -> PushRequest:
        return cls(frozenset(keys), Counter({reason: 1}), False, now)

    @classmethod
    def full(cls, reason: str, now: float, forced: bool = False) -> PushRequest:
        return cls(None, Counter({reason: 1}), forced, now)

    @property
    def kinds(self) -> frozenset[str] | None:
        if self.changed is None:
            return None
        return frozenset(key.kind for key in self.changed)

    def merge(self, other: PushRequest) -> PushRequest:
        changed = None if self.changed is None or other.changed is None else (
            self.changed | other.changed
        )
        return PushRequest(
            changed,
            self.reasons + other.reasons,
            self.forced or other.forced,
            min(self.start, other.start),
        )


@attrs.define
class Debouncer:
    after: float = 0.1
    max: float = 10.0
    pending: PushRequest | None = None
    first_at: float = 0.0
    last_at: float = 0.0
    busy: bool = False
    events: int = 0

    def add(self, request: PushRequest, now: float) -> None:
        if self.pending is None:
            self.pending = request
            self.first_at = now
            self.events = 0
        else:
            self.pending = self.pending.merge(request)
        self.last_at = now
        self.events += 1

    def wait_time(self, now: float) -> float | None:
        """Seconds until a batch could be released; None when nothing waits (or busy)."""
        if self.pending is None or self.busy:
            return None
        quiet_left = self.after - (now - self.last_at)
        max_left = self.max - (now - self.first_at)
        return max(0.0, min(quiet_left, max_left))

    def take(self, now: float) -> PushRequest | None:
        """Release the batch if it is due; the caller must call `done` after pushing."""
        wait = self.wait_time(now)
        if wait is None or wait > 0:
            return None
        request, self.pending = self.pending, None
        self.busy = True
        return request

    def done(self) -> None:
        self.busy = False
