"""Circuit breakers' counting, as Envoy's at the DEFAULT priority."""

from __future__ import annotations

from pilotfish.core.native.breakers import Breaker, Limits


def test_envoys_defaults() -> None:
    assert Limits() == Limits(max_connections=1024, max_pending_requests=1024,
                              max_requests=1024, max_retries=3)


def test_requests_pending_and_retries_stop_at_their_limits() -> None:
    breaker = Breaker(Limits(max_connections=1, max_pending_requests=1, max_requests=2,
                             max_retries=1))
    assert breaker.start_request() and breaker.start_request()
    assert not breaker.start_request()
    breaker.end_request()
    assert breaker.start_request()
    assert breaker.start_pending() and not breaker.start_pending()
    breaker.end_pending()
    assert breaker.start_pending()
    assert breaker.start_retry() and not breaker.start_retry()
    breaker.end_retry()
    assert breaker.start_retry()


def test_connections_stop_at_the_limit_but_a_host_without_one_may_open_one() -> None:
    breaker = Breaker(Limits(max_connections=2))
    assert breaker.may_connect(open_connections=1, open_to_host=1)
    assert not breaker.may_connect(open_connections=2, open_to_host=1)
    assert breaker.may_connect(open_connections=2, open_to_host=0)


def test_statistics_say_which_breakers_are_open_and_what_remains() -> None:
    breaker = Breaker(Limits(max_connections=1, max_pending_requests=5, max_requests=5,
                             max_retries=3))
    breaker.start_request()
    stats = breaker.statistics(open_connections=1)
    assert stats["cx_open"] == 1 and stats["remaining_cx"] == 0
    assert stats["rq_open"] == 0 and stats["remaining_rq"] == 4
    assert stats["remaining_pending"] == 5 and stats["remaining_retries"] == 3


def test_a_retry_budget_scales_with_the_requests_in_flight() -> None:
    """Istio's retryBudget: 25% of the active and pending requests may be retries, but
    never fewer than 2 at once (max_retries no longer counts)."""
    breaker = Breaker(Limits(max_retries=100, retry_budget=(25.0, 2)))
    assert breaker.retry_limit() == 2  # nothing in flight: the floor
    for _ in range(16):
        breaker.start_request()
    assert breaker.retry_limit() == 4
    assert all(breaker.start_retry() for _ in range(4)) and not breaker.start_retry()
    assert breaker.statistics(0)["remaining_retries"] == 0
