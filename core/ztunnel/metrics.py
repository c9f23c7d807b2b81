"""ztunnel's connection metrics, with Istio's names and ztunnel's labels: Istio's TCP series
(``istio_tcp_connections_opened_total``, ``..._closed_total``, ``istio_tcp_sent_bytes_total``,
``istio_tcp_received_bytes_total``) without the HTTP-only labels, ``request_protocol`` always
``tcp``, ``connection_security_policy`` ``mutual_tls`` over HBONE and ``unknown`` otherwise.

Each connection is counted twice at most, as ztunnel does: by the source pod's ztunnel
(reporter ``source``) and by the destination pod's (reporter ``destination``). Bytes are added
as they pass (no per-connection flush); the series are rendered on scrape.
"""

from __future__ import annotations

import attrs

from pilotfish.core.ambient.model import Workload
from pilotfish.core.istio_metrics import LABELS, UNKNOWN
from pilotfish.core.prometheus import Family, Sample, render

TCP_LABELS = tuple(name for name in LABELS if name not in ("response_code",
                                                           "grpc_response_status"))
COUNTERS = (
    ("istio_tcp_connections_opened", "connections opened"),
    ("istio_tcp_connections_closed", "connections closed"),
    ("istio_tcp_sent_bytes", "bytes sent to the destination"),
    ("istio_tcp_received_bytes", "bytes received from the destination"),
    ("istio_tcp_connections_failed", "connections that could not be made"),
)
NAMES = tuple(name for name, _ in COUNTERS)
Labels = tuple[tuple[str, str], ...]


def _side(side: str, peer: Workload | None, principal: str | None) -> dict[str, str]:
    if peer is None:
        return {f"{side}_workload": UNKNOWN, f"{side}_workload_namespace": UNKNOWN,
                f"{side}_principal": principal or UNKNOWN, f"{side}_app": UNKNOWN,
                f"{side}_version": UNKNOWN, f"{side}_canonical_service": UNKNOWN,
                f"{side}_canonical_revision": UNKNOWN, f"{side}_cluster": UNKNOWN}
    return {f"{side}_workload": peer.workload_name or peer.name,
            f"{side}_workload_namespace": peer.namespace,
            f"{side}_principal": principal or UNKNOWN,
            f"{side}_app": peer.canonical_name or UNKNOWN,
            f"{side}_version": peer.canonical_revision or UNKNOWN,
            f"{side}_canonical_service": peer.canonical_name or UNKNOWN,
            f"{side}_canonical_revision": peer.canonical_revision or "latest",
            f"{side}_cluster": peer.cluster_id or "Kubernetes"}


@attrs.frozen
class Flow:
    """Who a connection is between, as its series' labels say it."""

    reporter: str  # source | destination
    source: Workload | None
    source_principal: str | None
    destination: Workload | None
    destination_principal: str | None
    service_host: str = ""
    service_name: str = ""
    service_namespace: str = ""
    mutual_tls: bool = False

    def labels(self) -> Labels:
        values = {"reporter": self.reporter,
                  **_side("source", self.source, self.source_principal),
                  **_side("destination", self.destination, self.destination_principal),
                  "destination_service": self.service_host or UNKNOWN,
                  "destination_service_name": self.service_name or UNKNOWN,
                  "destination_service_namespace": self.service_namespace or UNKNOWN,
                  "request_protocol": "tcp", "response_flags": "-",
                  "connection_security_policy": "mutual_tls" if self.mutual_tls
                  else "unknown"}
        return tuple((name, values[name]) for name in TCP_LABELS)


class Series:
    """One label set's counters. A connection holds its series, so counting a read or a
    write is one addition (no hashing of the ~25 labels each time)."""

    __slots__ = ("labels", "values")

    def __init__(self, labels: Labels) -> None:
        self.labels = labels
        self.values = dict.fromkeys(NAMES, 0)


class Metrics:
    def __init__(self) -> None:
        self._series: dict[Labels, Series] = {}

    def series(self, labels: Labels) -> Series:
        found = self._series.get(labels)
        if found is None:
            found = self._series[labels] = Series(labels)
        return found

    def add(self, name: str, series: Series, amount: int = 1) -> None:
        series.values[name] += amount

    @property
    def counters(self) -> dict[str, dict[Labels, int]]:
        """Each counter's value by label set (the series that have counted it)."""
        return {name: {s.labels: s.values[name] for s in self._series.values()
                       if s.values[name]} for name in NAMES}

    def render(self) -> str:
        counters = self.counters
        families = [Family(name, "counter", help_text, tuple(
            Sample(f"{name}_total", labels, str(value))
            for labels, value in counters[name].items()))
            for name, help_text in COUNTERS]
        return render([f for f in families if f.samples])
