"""What one xDS client may hold: the mesh config's ``discovery.xdsLimits``."""

from __future__ import annotations

import math

import attrs


@attrs.frozen
class Limits:
    """What one client may hold (mesh config ``discovery.xdsLimits``)."""

    first_request_timeout: float = 10.0  # seconds from stream start to its first request
    send_timeout: float = 30.0  # seconds a client may take to read one response
    streams_per_peer: int = 1024  # streams one peer address holds at once
    types_per_stream: int = 32  # distinct type URLs one stream may subscribe to
    error_text: int = 1024  # characters of a NACK's message kept and logged
    nack_log_interval: float = 10.0  # seconds between NACK log lines of one stream


DEFAULT_LIMITS = Limits()
# Mesh config field → Limits attribute.
LIMIT_FIELDS = {"firstRequestTimeout": "first_request_timeout",
                "sendTimeout": "send_timeout",
                "streamsPerPeer": "streams_per_peer", "typesPerStream": "types_per_stream",
                "errorText": "error_text", "nackLogInterval": "nack_log_interval"}
DURATIONS = frozenset({"firstRequestTimeout", "sendTimeout", "nackLogInterval"})


@attrs.define
class LogThrottle:
    """At most one log line per interval; what happened in between is counted, then said
    with the next line (a client repeating itself cannot flood the log)."""

    interval: float
    last: float = -math.inf
    unsaid: int = 0

    def due(self, now: float) -> int | None:
        """None: stay quiet. Otherwise log now, saying how many went unsaid before."""
        if now - self.last < self.interval:
            self.unsaid += 1
            return None
        unsaid, self.unsaid, self.last = self.unsaid, 0, now
        return unsaid
