"""The native proxy's counters in Envoy's Prometheus names."""

from __future__ import annotations

from pilotfish.core.native.stats import Stats

CLUSTER = "outbound|80||web.default.svc.cluster.local"


def test_outlier_and_breaker_stats_are_tagged_with_the_whole_cluster_name() -> None:
    stats = Stats()
    stats.inc(f"cluster.{CLUSTER}.upstream_rq_pending_overflow")
    stats.inc(f"cluster.{CLUSTER}.outlier_detection.ejections_enforced_total", 2)
    stats.gauges[f"cluster.{CLUSTER}.outlier_detection.ejections_active"] = 1
    stats.gauges[f"cluster.{CLUSTER}.circuit_breakers.default.rq_pending_open"] = 1
    text = stats.prometheus()
    label = f'{{envoy_cluster_name="{CLUSTER}"}}'
    assert f"envoy_cluster_upstream_rq_pending_overflow{label} 1" in text
    assert f"envoy_cluster_outlier_detection_ejections_enforced_total{label} 2" in text
    assert f"envoy_cluster_outlier_detection_ejections_active{label} 1" in text
    assert f"envoy_cluster_circuit_breakers_default_rq_pending_open{label} 1" in text
