"""What a finished request or connection leaves behind in the native proxy: its
`Outcome` (for the access log and the metrics), and Istio's standard metrics counted from
it (`IstioCounts`), with a Telemetry's overrides.

Each kind of request (cluster, peer identity, status, flags, gRPC status, protocol) is
looked up once and remembered with the series it adds to; a Telemetry whose tags read the
request (CEL) makes each request's labels its own. The labels are Istio's, in Istio's
order; the peer's principals and our own identity give the TLS ones. A connection an
internal listener took from an HBONE tunnel this proxy terminated has no TLS of its own:
there the tunnel's identities, which ``connect_terminate`` left in the filter state it
shares with the hop (``io.istio.peer_principal``, ``io.istio.local_principal``), give them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from pilotfish.core import istio_metrics, prometheus
from pilotfish.core.istio_requests import Histogram, IstioSeries, Key
from pilotfish.core.metric_overrides import NO_OVERRIDES, Overrides
from pilotfish.core.native import http1, rbac
from pilotfish.core.native.config import Cluster
from pilotfish.core.native.stats import Stats


@attrs.define
class Outcome:
    """How one request went, for the access log."""

    status: int
    cluster: str = ""
    upstream: str = ""
    sent: int = 0
    flags: str = "-"
    keep: bool = True
    route: str = ""
    grpc_status: str = ""  # a gRPC answer's status code ("" for other answers)
    streamed: bool = False  # the answer went out as it came (nothing left to send)


_Labels = tuple[tuple[str, str], ...]  # a series' labels, in order
# istio_requests_total's counts, the series key, and its three histograms (each None when
# a Telemetry turns it off)
_RequestSeries = tuple[dict[Any, float], "Key | None", "Histogram | None", "Histogram | None",
                       "Histogram | None"]



def identities(peer: rbac.Facts | None) -> tuple[tuple[str, ...], str]:
    """The peer's principals and our own identity: the handshake's; on a hop without a peer
    certificate, the HBONE tunnel's from the filter state when the hop came from one."""
    if peer is None:
        return (), ""
    if peer.principals or not peer.filter_state:
        return peer.principals, peer.identity
    client = peer.filter_state.get(istio_metrics.PEER_PRINCIPAL)
    if not client:
        return peer.principals, peer.identity
    return (client,), peer.identity or peer.filter_state.get(istio_metrics.LOCAL_PRINCIPAL, "")


class IstioCounts:
    """Istio's request and TCP metrics of one proxy process."""

    def __init__(self) -> None:
        self.series = IstioSeries()
        # TLS labels by (cluster, peer principals, our identity); None: not Istio's
        self._labels: dict[tuple[str, tuple[str, ...], str], _Labels | None] = {}
        # by kind of request (None: a cluster that is not Istio's, nothing counted)
        self._series: dict[tuple[Any, ...], _RequestSeries | None] = {}

    def security(self, cluster: str, peer: rbac.Facts | None) -> _Labels | None:
        """The TLS labels of a request or connection to ``cluster`` from ``peer``; None
        for a cluster that is not Istio's. Worked out once per cluster and peer identity."""
        principals, identity = identities(peer)
        key = (cluster, principals, identity)
        if key in self._labels:
            return self._labels[key]
        ref = istio_metrics.parse_cluster_name(cluster)
        labels = None if ref is None else tuple(sorted(istio_metrics.security_labels(
            istio_metrics.reporter_of(ref), istio_metrics.spiffe_name(principals),
            identity).items()))
        if len(self._labels) > 10_000:  # peers come and go: forget them all now and then
            self._labels.clear()
        self._labels[key] = labels
        return labels

    def request(self, outcome: Outcome, received: int, seconds: float,
                      peer: rbac.Facts | None = None,
                      request: http1.Message | None = None,
                      metrics: Overrides = NO_OVERRIDES,
                      attributes: Mapping[str, Any] | None = None) -> None:
        """Istio's request metrics for one request, with a Telemetry's ``metrics``
        overrides (tags set from CEL on the request's ``attributes``)."""
        grpc = request is not None and (request.header("content-type") or "").startswith(
            "application/grpc")
        if metrics.tags:  # labels of this request's own: no series to remember
            series = self._request_series(outcome, peer, grpc, metrics, attributes or {})
        else:
            principals, identity = identities(peer)
            kind = (metrics.disabled, outcome.cluster, principals, identity, outcome.status,
                    outcome.flags, outcome.grpc_status, grpc)
            if kind in self._series:
                series = self._series[kind]
            else:
                series = self._request_series(outcome, peer, grpc, metrics, {})
                if len(self._series) > 10_000:  # peers come and go: forget them now and then
                    self._series.clear()
                self._series[kind] = series
        if series is None:
            return
        counts, key, duration, request_bytes, response_bytes = series
        if key is not None:
            counts[key] += 1
        if duration is not None:
            duration.observe(seconds * 1000)
        if request_bytes is not None:
            request_bytes.observe(received)
        if response_bytes is not None:
            response_bytes.observe(outcome.sent)

    def _request_series(self, outcome: Outcome, peer: rbac.Facts | None, grpc: bool,
                        metrics: Overrides, attributes: Mapping[str, Any]
                        ) -> _RequestSeries | None:
        """Where a request is counted (None: not an Istio cluster's; a family the
        overrides disable, None in its place)."""
        security = self.security(outcome.cluster, peer)
        if security is None:
            return None
        extras = {**dict(security), "grpc_response_status": outcome.grpc_status,
                  "request_protocol": "grpc" if grpc else "http",
                  "response_code": str(outcome.status), "response_flags": outcome.flags}
        istio = self.series

        def key(family: str) -> Key | None:
            if family in metrics.disabled:
                return None
            return (outcome.cluster, metrics.extras(family, extras, attributes))

        def histogram(family: str) -> Histogram | None:
            found = key(family)
            return None if found is None else istio.histogram(family, found)

        return (istio.counters["istio_requests_total"], key("istio_requests_total"),
                histogram("istio_request_duration_milliseconds"),
                histogram("istio_request_bytes"), histogram("istio_response_bytes"))

    def tcp(self, cluster: str, metrics: Overrides = NO_OVERRIDES,
                  opened: bool = False, received: int = 0, sent: int = 0,
                  peer: rbac.Facts | None = None) -> None:
        security = self.security(cluster, peer)
        if security is None:
            return
        extras = {**dict(security), "request_protocol": "tcp", "response_flags": "-"}
        counted = (("istio_tcp_connections_opened_total", 1),) if opened else (
            ("istio_tcp_connections_closed_total", 1),
            ("istio_tcp_received_bytes_total", received),
            ("istio_tcp_sent_bytes_total", sent))
        for family, value in counted:
            if family not in metrics.disabled:
                self.series.add(family, (cluster, metrics.extras(family, extras, {})), value)

    def prometheus(self, workload: istio_metrics.Workload, stats: Stats,
                   clusters: Mapping[str, Cluster], istio: IstioSeries | None = None) -> str:
        """Envoy-named counters, then Istio's standard metrics (these, or the totals
        given), each series' destination service from its cluster's Istio metadata."""
        istio = istio or self.series
        services: dict[str, istio_metrics.ServiceRef | None] = {}
        for name in istio.clusters():
            cluster = clusters.get(name)
            found = ((cluster.metadata if cluster else {}).get("filterMetadata", {})
                     .get("istio", {}).get("services") or [None])[0]
            services[name] = istio_metrics.ServiceRef(
                str(found["host"]), str(found.get("name") or found["host"]),
                str(found.get("namespace") or istio_metrics.UNKNOWN)) \
                if isinstance(found, dict) and found.get("host") else None
        return stats.prometheus() + prometheus.render(istio.families(workload, services))
