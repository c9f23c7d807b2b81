"""Mirrored requests (``utils/http/mirror.go``, ``tests/httproute-request-percentage-mirror.go``):
found in the mirror backends' logs, where echo-basic writes
``Echoing back request made to PATH to client (ADDR)`` for every request.

``logs`` gives the log lines of a backend's pods (``DumpEchoLogs``: the pods labelled
``app=<name>`` in its namespace, but failed ones).
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import attrs

from .compare import with_request_id
from .exchanges import REQUEST_ID, Objects, Target, http_exchange
from .model import ExpectedResponse, MirroredBackend, Ref
from .timeouts import TimeoutConfig

Logs = Callable[[Ref], Sequence[str]]
CONCURRENT_REQUESTS = 10
TOTAL_REQUESTS = 500
DISTRIBUTION_CHECKS = 5
TOLERANCE_STD_DEVS = 3.0


def pattern(path: str) -> re.Pattern[str]:
    """``GetMirrorLogRegexp``."""
    return re.compile(f"Echoing back request made to {re.escape(path)} to client")


def mirrored(expected: ExpectedResponse, target: Target, objects: Objects, logs: Logs,
             t: TimeoutConfig) -> str | None:
    """``ExpectMirroredRequest`` around ``MakeRequestAndExpectEventuallyConsistentResponse``:
    each mirror's log is watched (every second, for ``RequestTimeout``) from before the
    request is first sent, for the request's path (with its request id)."""
    if expected.unique_query_param == REQUEST_ID:
        expected = attrs.evolve(with_request_id(expected, REQUEST_ID, str(uuid.uuid4())),
                                unique_query_param="")
    wanted = pattern(expected.request.path)
    started = threading.Barrier(len(expected.mirrored_to) + 1)

    def watch(mirror: MirroredBackend) -> str | None:
        deadline = time.monotonic() + t.request_timeout
        first = True
        while True:
            try:
                found = any(wanted.search(line) for line in logs(mirror.backend))
            except OSError:
                found = False
            if first:
                first = False
                started.wait()
            if found:
                return None
            if time.monotonic() > deadline:
                return (f"couldn't find mirrored request in \"{mirror.backend[0]}/"
                        f"{mirror.backend[1]}\" logs")
            time.sleep(1.0)

    with ThreadPoolExecutor(len(expected.mirrored_to)) as pool:
        watchers = [pool.submit(watch, mirror) for mirror in expected.mirrored_to]
        started.wait()
        outcome = http_exchange(expected, target, objects, t)
        problems = [p for p in (w.result() for w in watchers) if p]
    if outcome is not None:
        return outcome
    return "; ".join(problems) or None


def band(percent: float, total: int = TOTAL_REQUESTS) -> tuple[float, float]:
    """Where the mirrored count of ``total`` requests must fall: three binomial standard
    deviations either side of the mean."""
    p = percent / 100.0
    margin = TOLERANCE_STD_DEVS * math.sqrt(total * p * (1 - p))
    return total * p - margin, total * p + margin


def percentage(expected: ExpectedResponse, target: Target, objects: Objects, logs: Logs,
               t: TimeoutConfig) -> str | None:
    """The percentage mirror test: the request passes, then up to five rounds of 500
    requests (10 at a time) sharing a fresh request id; each mirror's count of that path in
    its log must fall within the band."""
    outcome = http_exchange(attrs.evolve(expected, unique_query_param=""), target, objects, t)
    if outcome is not None:
        return outcome
    once = attrs.evolve(t, required_consecutive_successes=1)
    last = ""
    for _ in range(DISTRIBUTION_CHECKS):
        sent = attrs.evolve(with_request_id(expected, REQUEST_ID, str(uuid.uuid4())),
                            unique_query_param="")
        with ThreadPoolExecutor(CONCURRENT_REQUESTS) as pool:
            failures = [f for f in pool.map(http_exchange, [sent] * TOTAL_REQUESTS,
                                            [target] * TOTAL_REQUESTS,
                                            [objects] * TOTAL_REQUESTS,
                                            [once] * TOTAL_REQUESTS) if f]
        if failures:
            return f"{len(failures)} of {TOTAL_REQUESTS} requests failed: {failures[0]}"
        wanted = pattern(sent.request.path)
        problems = []
        for mirror in expected.mirrored_to:
            got = sum(1 for line in logs(mirror.backend) if wanted.search(line))
            low, high = band(float(mirror.percent or 0))
            if not low <= got <= high:
                problems.append(f"pod {mirror.backend[1]} did not meet the mirroring "
                                f"percentage within tolerance. Expected between {low:f} and "
                                f"{high:f}, but got {got}")
        if not problems:
            return None
        last = "; ".join(problems)
        time.sleep(2)
    return f"percentage based mirror distribution tests failed: {last}"
