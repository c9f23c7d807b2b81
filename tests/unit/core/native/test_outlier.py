"""Outlier detection as Envoy's consecutive-error detectors, on a fake clock."""

from __future__ import annotations

import random

from pilotfish.core.native.outlier import Detector, Outlier

A, B, C = ("10.0.0.1", 80), ("10.0.0.2", 80), ("10.0.0.3", 80)


def detector(**config: object) -> Detector:
    return Detector(Outlier(**{"max_ejection_percent": 100, **config}),  # type: ignore[arg-type]
                    random.Random(0))


def test_consecutive_5xx_ejects_and_a_success_resets_the_count() -> None:
    found = detector(consecutive_5xx=3)
    for status in (500, 500, 200, 500, 500):
        found.http_status(A, status, 0.0, 3)
    assert found.ejected() == frozenset()
    found.http_status(A, 500, 1.0, 3)
    assert found.ejected() == {A}
    stats = found.statistics()
    assert stats["ejections_active"] == 1
    assert stats["ejections_enforced_total"] == 1
    assert stats["ejections_detected_consecutive_5xx"] == 1
    assert stats["ejections_enforced_consecutive_5xx"] == 1


def test_an_ejected_host_returns_when_its_time_is_up_and_the_time_grows() -> None:
    found = detector(consecutive_5xx=1, interval=1.0, base_ejection_time=10.0)
    found.http_status(A, 503, 0.0, 3)
    assert found.ejected() == {A}
    found.refresh(9.5)
    assert found.ejected() == {A}
    found.refresh(10.0)
    assert found.ejected() == frozenset()
    # ejected again at once: twice the base time now
    found.http_status(A, 503, 10.5, 3)
    found.refresh(29.0)
    assert found.ejected() == {A}
    found.refresh(31.0)
    assert found.ejected() == frozenset()
    # a long healthy spell brings the multiplier back down
    found.refresh(100.0)
    found.http_status(A, 503, 100.0, 3)
    found.refresh(110.0)
    assert found.ejected() == frozenset()
    assert found.statistics()["ejections_enforced_total"] == 3


def test_the_ejection_time_stops_at_max_ejection_time() -> None:
    found = detector(consecutive_5xx=1, interval=1.0, base_ejection_time=10.0,
                     max_ejection_time=15.0)
    now = 0.0
    for _ in range(4):
        found.http_status(A, 500, now, 3)
        now += 15.0
        found.refresh(now)
        assert found.ejected() == frozenset()


def test_max_ejection_percent_caps_ejections() -> None:
    found = Detector(Outlier(consecutive_5xx=1))  # Envoy's default: 10%
    found.http_status(A, 500, 0.0, 3)  # one of three would be 33%
    assert found.ejected() == frozenset()
    assert found.statistics()["ejections_overflow"] == 1
    found.http_status(A, 500, 0.0, 10)
    found.http_status(B, 500, 0.0, 10)
    assert found.ejected() == {A}
    assert found.statistics()["ejections_overflow"] == 2
    half = detector(consecutive_5xx=1, max_ejection_percent=50)
    for host in (A, B, C):
        half.http_status(host, 500, 0.0, 4)
    assert half.ejected() == {A, B}


def test_gateway_failures_count_only_when_enforced() -> None:
    found = detector(consecutive_5xx=10, consecutive_gateway_failure=2)
    found.http_status(A, 502, 0.0, 3)
    found.http_status(A, 504, 0.0, 3)
    assert found.ejected() == frozenset()  # detected, not enforced (Envoy's default 0%)
    assert found.statistics()["ejections_detected_consecutive_gateway_failure"] == 1
    enforced = detector(consecutive_5xx=10, consecutive_gateway_failure=2,
                        enforcing_consecutive_gateway_failure=100)
    enforced.http_status(A, 502, 0.0, 3)
    enforced.http_status(A, 500, 0.0, 3)  # not a gateway error: the count starts over
    enforced.http_status(A, 503, 0.0, 3)
    assert enforced.ejected() == frozenset()
    enforced.http_status(A, 504, 0.0, 3)
    assert enforced.ejected() == {A}
    assert enforced.statistics()["ejections_enforced_consecutive_gateway_failure"] == 1


def test_local_origin_failures_count_as_gateway_errors_unless_split() -> None:
    joined = detector(consecutive_5xx=2)
    joined.local_failure(A, 0.0, 3)
    joined.local_failure(A, 0.0, 3, timeout=True)
    assert joined.ejected() == {A}
    split = detector(consecutive_5xx=2, split_external_local_origin_errors=True,
                     consecutive_local_origin_failure=2)
    split.local_failure(B, 0.0, 3)
    split.local_success(B)  # a connection made resets the local count
    split.local_failure(B, 0.0, 3)
    split.http_status(B, 500, 0.0, 3)  # external errors count apart
    assert split.ejected() == frozenset()
    split.local_failure(B, 0.0, 3)
    assert split.ejected() == {B}
    assert split.statistics()["ejections_enforced_consecutive_local_origin_failure"] == 1


def test_enforcing_is_a_percentage() -> None:
    found = Detector(Outlier(consecutive_5xx=1, enforcing_consecutive_5xx=50,
                             max_ejection_percent=100, interval=1.0,
                             base_ejection_time=1.0), random.Random(5))
    ejected = 0
    for step in range(200):
        found.http_status(A, 500, step * 10.0, 1)
        ejected += bool(found.ejected())
        found.refresh(step * 10.0 + 5.0)
    assert 60 < ejected < 140


def test_hosts_that_left_the_cluster_are_forgotten() -> None:
    found = detector(consecutive_5xx=1)
    found.http_status(A, 500, 0.0, 2)
    found.http_status(B, 200, 0.0, 2)
    found.refresh(0.0, present={B})
    assert set(found.hosts) == {B}
