"""The merged scrape's pure parts: where the app's metrics are, cluster metadata, merging."""

from __future__ import annotations

import pytest

from pilotfish.agent.merged_metrics import app_metrics_url, combine
from pilotfish.core import prometheus


@pytest.mark.parametrize(("annotations", "url"), [
    ({"prometheus.io/scrape": "true", "prometheus.io/port": "9102"},
     "http://127.0.0.1:9102/metrics"),
    ({"prometheus.io/scrape": "True", "prometheus.io/port": "8080",
      "prometheus.io/path": "stats"}, "http://127.0.0.1:8080/stats"),
    ({"prometheus.io/scrape": "false", "prometheus.io/port": "9102"}, None),
    ({"prometheus.io/scrape": "true"}, None),  # no port: nothing to guess from
    ({}, None),
])
def test_app_metrics_url_follows_prometheus_annotations(
        annotations: dict[str, str], url: str | None) -> None:
    assert app_metrics_url(annotations) == url


def test_bad_app_annotations_are_named() -> None:
    with pytest.raises(ValueError, match=r"prometheus\.io/port: 'http' is not a port"):
        app_metrics_url({"prometheus.io/scrape": "true", "prometheus.io/port": "http"})
    with pytest.raises(ValueError, match=r"prometheus\.io/scheme: 'https'"):
        app_metrics_url({"prometheus.io/scrape": "true", "prometheus.io/port": "1",
                         "prometheus.io/scheme": "https"})
    assert app_metrics_url({"prometheus.io/scrape": "true", "prometheus.io/port": "1"},
                           "::1") == "http://[::1]:1/metrics"


def test_combine_keeps_the_proxy_text_and_drops_colliding_app_families() -> None:
    # The proxy's text as its backend gives it: its own stats, then Istio's metrics.
    proxy_text = ("# TYPE envoy_up gauge\nenvoy_up 1\n"
                  "# TYPE istio_requests_total counter\nistio_requests_total 2\n")
    proxy = prometheus.parse(proxy_text)
    own = prometheus.parse("# TYPE istio_build gauge\nistio_build 1\n")
    app = prometheus.parse("# TYPE envoy_up gauge\nenvoy_up 0\n"
                           "# TYPE orders counter\norders_total 7\n")
    text = combine(own, proxy_text, proxy, [("http://127.0.0.1:9/m", app)])
    assert text.index("istio_build") < text.index("envoy_up 1") < text.index(
        "istio_requests_total 2") < text.index("orders_total 7")
    assert "envoy_up 0" not in text
    assert "# pilotfish: http://127.0.0.1:9/m: family envoy_up dropped" in text
    # One TYPE line per name: what Prometheus needs to accept the scrape.
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types))
    assert prometheus.parse(text)  # and the whole is valid text
