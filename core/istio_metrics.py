"""Istio's standard metrics, derived from a stock Envoy's own per-cluster stats. Sans-IO.

Istio's Envoy builds ``istio_requests_total`` and friends in its ``istio.stats`` filter,
which stock Envoy lacks. Envoy does count, per upstream cluster, responses by code,
upstream request time and connections — and Istio's cluster names say who the traffic
was for: ``outbound|PORT|SUBSET|HOST`` (this proxy was the client: reporter ``source``)
and ``inbound|PORT||`` (this proxy fronts the server: reporter ``destination``). This
module maps those series to Istio's names and labels and sums series that land on the
same label set (subsets and ports are not Istio labels).

It reads the tags the bootstrap's ``stats_config`` extracts (``cluster_name``,
``response_code``, ``tcp_prefix``; see ``plugins/envoy_bootstrap.py``). Where Envoy's
stats cannot say something — the peer's workload, mTLS, response flags — the label is
``unknown`` (``-`` for flags), Istio's own value for "not known"; docs/agent.md has the
table. A proxy that already exports ``istio_*`` families (the native proxy does) is
left alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs

from pilotfish.core.prometheus import Family, Sample

UNKNOWN = "unknown"
PEER_FIELDS = ("workload", "workload_namespace", "principal", "app", "version",
               "canonical_service", "canonical_revision", "cluster")
# Istio's label order (istio_stats); HTTP series add response_code and grpc_response_status.
LABELS = (
    "reporter",
    *(f"source_{f}" for f in PEER_FIELDS),
    *(f"destination_{f}" for f in PEER_FIELDS[:-1]),
    "destination_service", "destination_service_name", "destination_service_namespace",
    "destination_cluster",
    "request_protocol", "response_code", "grpc_response_status", "response_flags",
    "connection_security_policy",
)
HTTP_ONLY = ("response_code", "grpc_response_status")
SPECIAL_CLUSTERS = {  # name → reporter
    "PassthroughCluster": "source",
    "BlackHoleCluster": "source",
    "InboundPassthroughCluster": "destination",
}


@attrs.frozen
class Workload:
    """This proxy's own side of every series (Istio reads it from node metadata)."""

    name: str
    namespace: str
    app: str = UNKNOWN
    version: str = UNKNOWN
    canonical_service: str = UNKNOWN
    canonical_revision: str = "latest"
    cluster: str = "Kubernetes"

    @classmethod
    def from_labels(cls, name: str, namespace: str, labels: Mapping[str, str],
                    cluster: str = "Kubernetes") -> Workload:
        # Istio's canonical-service fallbacks: the explicit label, the recommended
        # Kubernetes label, app, then the workload name.
        service = (labels.get("service.istio.io/canonical-name")
                   or labels.get("app.kubernetes.io/name") or labels.get("app") or name)
        revision = (labels.get("service.istio.io/canonical-revision")
                    or labels.get("app.kubernetes.io/version") or labels.get("version")
                    or "latest")
        return cls(name, namespace, labels.get("app", UNKNOWN), labels.get("version", UNKNOWN),
                   service, revision, cluster)

    def labels(self, side: str) -> dict[str, str]:
        return {
            f"{side}_workload": self.name, f"{side}_workload_namespace": self.namespace,
            f"{side}_principal": UNKNOWN,  # only the TLS handshake knows (see docs)
            f"{side}_app": self.app, f"{side}_version": self.version,
            f"{side}_canonical_service": self.canonical_service,
            f"{side}_canonical_revision": self.canonical_revision,
            f"{side}_cluster": self.cluster,
        }


@attrs.frozen
class ServiceRef:
    """A service a cluster leads to, from the cluster's ``istio`` metadata."""

    host: str
    name: str
    namespace: str


@attrs.frozen
class ClusterRef:
    name: str
    direction: str  # inbound, outbound, or the special cluster's own name
    port: str = ""
    subset: str = ""
    host: str = ""


def parse_cluster_name(name: str) -> ClusterRef | None:
    """``outbound|80|v1|web.shop.svc.cluster.local``, ``inbound|8080||`` or a special
    cluster → ClusterRef; None for anything else (xds-grpc, prometheus_stats, ...)."""
    if name in SPECIAL_CLUSTERS:
        return ClusterRef(name, name)
    parts = name.split("|")
    if len(parts) != 4 or parts[0] not in ("inbound", "outbound") or not parts[1].isdigit():
        return None
    return ClusterRef(name, parts[0], parts[1], parts[2], parts[3])


def service_from_host(host: str) -> ServiceRef:
    """``name.ns.svc.<domain>`` → (name, ns); any other host names itself, namespace
    unknown (a ServiceEntry's namespace is only in the cluster metadata)."""
    labels = host.split(".")
    if len(labels) >= 3 and labels[2] == "svc":
        return ServiceRef(host, labels[0], labels[1])
    return ServiceRef(host, host, UNKNOWN)


def series_labels(cluster: ClusterRef, workload: Workload,
                  service: ServiceRef | None) -> dict[str, str]:
    """Every label of one cluster's series except the HTTP-only ones."""
    reporter = SPECIAL_CLUSTERS.get(cluster.direction) or (
        "source" if cluster.direction == "outbound" else "destination")
    labels = {name: UNKNOWN for name in LABELS if name not in HTTP_ONLY}
    labels.update(workload.labels(reporter))  # this proxy is the side that reports
    if service is None and cluster.host:
        service = service_from_host(cluster.host)
    if service is not None:
        labels.update(destination_service=service.host, destination_service_name=service.name,
                      destination_service_namespace=service.namespace)
    elif cluster.direction in SPECIAL_CLUSTERS:
        labels["destination_service_name"] = cluster.name
    labels.update(reporter=reporter, response_flags="-")
    return labels


def clusters_seen(families: Iterable[Family]) -> set[str]:
    """Istio-named clusters these families mention (whose metadata to look up)."""
    names = set()
    for family in families:
        for sample in family.samples:
            name = sample.label("cluster_name") or sample.label("tcp_prefix")
            if name and parse_cluster_name(name) is not None:
                names.add(name)
    return names


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


Key = tuple[tuple[str, str], ...]


@attrs.define
class _Histogram:
    buckets: dict[str, float] = attrs.Factory(lambda: defaultdict(float))  # le → count
    sum: float = 0.0
    count: float = 0.0


class _Sums:
    """Series summed by label set (subsets and ports of one service meet here)."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[Key, float]] = defaultdict(lambda: defaultdict(float))
        self.histograms: dict[Key, _Histogram] = defaultdict(_Histogram)

    def add(self, metric: str, labels: Mapping[str, str], value: float) -> None:
        self.counters[metric][tuple(labels.items())] += value

    def counter(self, metric: str) -> tuple[Sample, ...]:
        return tuple(Sample(metric, key, _number(value))
                     for key, value in self.counters.get(metric, {}).items())

    def histogram(self, metric: str) -> tuple[Sample, ...]:
        """Per series: buckets in ``le`` order, then _sum and _count, as the format wants."""
        out: list[Sample] = []
        for key, h in self.histograms.items():
            for le in sorted(h.buckets, key=float):
                out.append(Sample(f"{metric}_bucket", (*key, ("le", le)), _number(h.buckets[le])))
            out.append(Sample(f"{metric}_sum", key, _number(h.sum)))
            out.append(Sample(f"{metric}_count", key, _number(h.count)))
        return tuple(out)


def derive(families: Sequence[Family], workload: Workload,
           services: Mapping[str, ServiceRef | None]) -> list[Family]:
    """Istio's standard metric families from Envoy's, for clusters that saw traffic."""
    by_name = {f.name: f for f in families}
    if any(name.startswith("istio_") for name in by_name):
        return []
    sums = _Sums()
    labels_of: dict[str, dict[str, str] | None] = {}

    def labels_for(cluster_name: str) -> dict[str, str] | None:
        if cluster_name not in labels_of:
            ref = parse_cluster_name(cluster_name)
            labels_of[cluster_name] = None if ref is None else series_labels(
                ref, workload, services.get(cluster_name))
        return labels_of[cluster_name]

    http_clusters: set[str] = set()
    for sample in _samples(by_name, "envoy_cluster_upstream_rq"):
        labels = labels_for(sample.label("cluster_name"))
        code = sample.label("response_code")  # upstream_rq_<code>; not _completed etc.
        if labels is None or not code or sample.number == 0:
            continue
        http_clusters.add(sample.label("cluster_name"))
        sums.add("istio_requests_total", _http(labels, code), sample.number)

    for sample in _samples(by_name, "envoy_cluster_upstream_rq_time"):
        labels = labels_for(sample.label("cluster_name"))
        if labels is None:
            continue
        key = tuple({**labels, "request_protocol": "http"}.items())
        suffix = sample.name.removeprefix("envoy_cluster_upstream_rq_time")
        if suffix == "_bucket":
            sums.histograms[key].buckets[sample.label("le")] += sample.number
        elif suffix == "_sum":
            sums.histograms[key].sum += sample.number
        elif suffix == "_count":
            sums.histograms[key].count += sample.number
    # Envoy lists every cluster's histogram; Istio's series start with the first request.
    for key in [k for k, h in sums.histograms.items() if not h.count]:
        del sums.histograms[key]

    _derive_tcp(by_name, sums, labels_for, http_clusters)
    return _families(sums)


def _http(labels: Mapping[str, str], code: str) -> dict[str, str]:
    out = dict(labels)
    out.update(request_protocol="http", response_code=code, grpc_response_status="")
    # Keep Istio's label order: the HTTP-only labels sit before response_flags.
    return {name: out[name] for name in LABELS}


def _samples(by_name: Mapping[str, Family], name: str) -> tuple[Sample, ...]:
    family = by_name.get(name)
    return family.samples if family else ()


def _by_cluster(by_name: Mapping[str, Family], name: str, label: str) -> dict[str, float]:
    return {s.label(label): s.number for s in _samples(by_name, name)}


def _derive_tcp(by_name: Mapping[str, Family], sums: _Sums,
                labels_for: Callable[[str], dict[str, str] | None],
                http_clusters: set[str]) -> None:
    """TCP series from the tcp_proxy stats, whose stat prefix is the cluster name."""
    opened = _by_cluster(by_name, "envoy_tcp_downstream_cx_total", "tcp_prefix")
    received = _by_cluster(by_name, "envoy_tcp_downstream_cx_rx_bytes_total", "tcp_prefix")
    sent = _by_cluster(by_name, "envoy_tcp_downstream_cx_tx_bytes_total", "tcp_prefix")
    destroyed = _by_cluster(by_name, "envoy_cluster_upstream_cx_destroy", "cluster_name")
    active = _by_cluster(by_name, "envoy_cluster_upstream_cx_active", "cluster_name")
    for cluster, count in opened.items():
        labels = labels_for(cluster)
        if labels is None or not count:
            continue
        series = {**labels, "request_protocol": "tcp"}
        # tcp_proxy keeps no close counter. Each of its connections has exactly one
        # upstream connection, so on a TCP-only cluster upstream closes are downstream
        # closes; where HTTP shares the cluster, pooled HTTP connections are in the
        # counts too and closed is estimated as opened minus active.
        if cluster in http_clusters:
            closed = count - active.get(cluster, 0)
        else:
            closed = destroyed.get(cluster, 0)
        sums.add("istio_tcp_connections_opened_total", series, count)
        sums.add("istio_tcp_connections_closed_total", series, max(0.0, min(count, closed)))
        sums.add("istio_tcp_received_bytes_total", series, received.get(cluster, 0))
        sums.add("istio_tcp_sent_bytes_total", series, sent.get(cluster, 0))


_HELP = {
    "istio_requests_total": "Requests, by response code (from Envoy's upstream_rq_<code>).",
    "istio_request_duration_milliseconds":
        "Upstream request time in milliseconds (from Envoy's upstream_rq_time).",
    "istio_tcp_connections_opened_total": "TCP connections opened (tcp_proxy).",
    "istio_tcp_connections_closed_total": "TCP connections closed (tcp_proxy).",
    "istio_tcp_received_bytes_total": "Bytes received from the client over TCP.",
    "istio_tcp_sent_bytes_total": "Bytes sent to the client over TCP.",
}


def _families(sums: _Sums) -> list[Family]:
    out = []
    for name, help_text in _HELP.items():
        if name == "istio_request_duration_milliseconds":
            samples, kind = sums.histogram(name), "histogram"
        else:
            samples, kind = sums.counter(name), "counter"
        if samples:
            out.append(Family(name, kind, help_text, samples))
    return out
