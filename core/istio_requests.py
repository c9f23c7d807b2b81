"""Istio's standard request and TCP metrics as series, sans-IO: counted per (cluster,
labels the request itself tells), rendered with the labels the cluster and this proxy's
workload tell (``istio_metrics``).

Two proxies feed it: Envoy's access-log entries, decoded by the agent
(``plugins/envoy/request_metrics.py``), and the native proxy, which counts each request as
it finishes (``core/native``).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from pilotfish.core.istio_metrics import (
    HTTP_ONLY,
    LABELS,
    ServiceRef,
    Workload,
    parse_cluster_name,
    series_labels,
)
from pilotfish.core.prometheus import Family, Sample

# Istio's buckets: request duration in milliseconds, sizes in bytes.
DURATION_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
                    60000, 300000, 600000, 1800000, 3600000)
SIZE_BUCKETS = tuple(float(10**power) for power in range(10))

HELP = {
    "istio_requests_total": "Requests, by response code and peer (from access-log entries).",
    "istio_request_duration_milliseconds": "Request duration in milliseconds.",
    "istio_request_bytes": "Request size in bytes (headers and body).",
    "istio_response_bytes": "Response size in bytes (headers and body).",
    "istio_tcp_connections_opened_total": "TCP connections opened.",
    "istio_tcp_connections_closed_total": "TCP connections closed.",
    "istio_tcp_received_bytes_total": "Bytes received from the client over TCP.",
    "istio_tcp_sent_bytes_total": "Bytes sent to the client over TCP.",
}
HISTOGRAMS = {
    "istio_request_duration_milliseconds": DURATION_BUCKETS,
    "istio_request_bytes": SIZE_BUCKETS,
    "istio_response_bytes": SIZE_BUCKETS,
}

REMOVED = "\x00removed"  # an extras value: the label is left out of the series

Extras = tuple[tuple[str, str], ...]  # the entry's own labels
Key = tuple[str, Extras]  # (cluster name, extras)
Labels = tuple[tuple[str, str], ...]  # a rendered series


@attrs.define
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = attrs.field(init=False)  # per bucket, not yet cumulative
    sum: float = 0.0
    count: int = 0

    def __attrs_post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def add(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum += other.sum
        self.count += other.count

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


@attrs.define
class IstioSeries:
    """Counters and histograms by (cluster, the request's own labels)."""

    counters: dict[str, dict[Key, float]] = attrs.Factory(
        lambda: defaultdict(lambda: defaultdict(float)))
    histograms: dict[str, dict[Key, Histogram]] = attrs.Factory(lambda: defaultdict(dict))

    def add(self, family: str, key: Key, value: float = 1) -> None:
        self.counters[family][key] += value

    def observe(self, metric: str, key: Key, value: float) -> None:
        self.histogram(metric, key).observe(value)

    def histogram(self, metric: str, key: Key) -> Histogram:
        """The histogram of one series (made empty the first time): a caller that sees the
        same series request after request may keep it."""
        series = self.histograms[metric]
        found = series.get(key)
        if found is None:
            found = series[key] = Histogram(HISTOGRAMS[metric])
        return found

    def snapshot(self) -> dict[str, Any]:
        """The series as plain data (for another process to add up)."""
        return {"counters": {f: dict(series) for f, series in self.counters.items()},
                "histograms": {m: {k: (h.bounds, list(h.counts), h.sum, h.count)
                                   for k, h in series.items()}
                               for m, series in self.histograms.items()}}

    def add_snapshot(self, snapshot: Mapping[str, Any]) -> None:
        """Add another process's series (a :meth:`snapshot`) to these."""
        for family, series in snapshot["counters"].items():
            for key, value in series.items():
                self.counters[family][key] += value
        for metric, series in snapshot["histograms"].items():
            for key, (bounds, counts, total, count) in series.items():
                into = self.histograms[metric].setdefault(key, Histogram(tuple(bounds)))
                other = Histogram(tuple(bounds))
                other.counts, other.sum, other.count = list(counts), total, count
                into.add(other)

    def clusters(self) -> set[str]:
        """Clusters seen so far (whose metadata the caller should look up)."""
        found = {cluster for series in self.counters.values() for cluster, _ in series}
        return found | {cluster for series in self.histograms.values() for cluster, _ in series}

    def families(self, workload: Workload, services: Mapping[str, ServiceRef | None]
                 ) -> list[Family]:
        def labels(key: Key) -> Labels:
            cluster, extras = key
            ref = parse_cluster_name(cluster)
            assert ref is not None  # only Istio's clusters are recorded
            out = {**series_labels(ref, workload, services.get(cluster)), **dict(extras)}
            names = list(LABELS) if out.get("request_protocol") != "tcp" else [
                n for n in LABELS if n not in HTTP_ONLY]
            # Telemetry's tag overrides: new tags after Istio's, removed ones left out.
            names += sorted(name for name in dict(extras) if name not in LABELS)
            return tuple((name, out.get(name, "")) for name in names
                         if out.get(name) != REMOVED)

        # Subsets and ports of one service land on the same label set: summed there.
        out = []
        for name, help_text in HELP.items():
            if name in HISTOGRAMS:
                merged: dict[Labels, Histogram] = {}
                for key, h in self.histograms.get(name, {}).items():
                    into = merged.setdefault(labels(key), Histogram(h.bounds))
                    into.add(h)
                samples = tuple(s for rendered, h in merged.items()
                                for s in _histogram_samples(name, rendered, h))
                kind = "histogram"
            else:
                sums: dict[Labels, float] = defaultdict(float)
                for key, value in self.counters.get(name, {}).items():
                    sums[labels(key)] += value
                samples = tuple(Sample(name, rendered, _number(value))
                                for rendered, value in sums.items())
                kind = "counter"
            if samples:
                out.append(Family(name, kind, help_text, samples))
        return out


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _histogram_samples(name: str, labels: Labels, h: Histogram
                       ) -> Iterable[Sample]:
    running = 0
    for bound, count in zip(h.bounds, h.counts, strict=False):
        running += count
        yield Sample(f"{name}_bucket", (*labels, ("le", _number(bound))), str(running))
    yield Sample(f"{name}_bucket", (*labels, ("le", "+Inf")), str(h.count))
    yield Sample(f"{name}_sum", labels, _number(h.sum))
    yield Sample(f"{name}_count", labels, str(h.count))
