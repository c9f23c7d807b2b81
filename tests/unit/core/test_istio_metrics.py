"""Istio's standard metrics derived from Envoy's own stats, on hand-written Envoy output."""

from __future__ import annotations

from pilotfish.core import istio_metrics, prometheus
from pilotfish.core.istio_metrics import ServiceRef, Workload, parse_cluster_name

WEB = "outbound|80||web.shop.svc.cluster.local"
WEB_V2 = "outbound|80|v2|web.shop.svc.cluster.local"
DB = "outbound|5432||db.shop.svc.cluster.local"
INBOUND = "inbound|8080||"

ENVOY = f"""\
# TYPE envoy_cluster_upstream_rq counter
envoy_cluster_upstream_rq{{response_code="200",cluster_name="{WEB}"}} 3
envoy_cluster_upstream_rq{{response_code="200",cluster_name="{WEB_V2}"}} 2
envoy_cluster_upstream_rq{{response_code="503",cluster_name="{WEB_V2}"}} 1
envoy_cluster_upstream_rq{{response_code="200",cluster_name="{INBOUND}"}} 4
envoy_cluster_upstream_rq{{response_code="200",cluster_name="xds-grpc"}} 9
envoy_cluster_upstream_rq{{response_code="404",cluster_name="PassthroughCluster"}} 1
# TYPE envoy_cluster_upstream_rq_completed counter
envoy_cluster_upstream_rq_completed{{cluster_name="{WEB}"}} 3
# TYPE envoy_cluster_upstream_rq_time histogram
envoy_cluster_upstream_rq_time_bucket{{cluster_name="{WEB}",le="1"}} 1
envoy_cluster_upstream_rq_time_bucket{{cluster_name="{WEB}",le="+Inf"}} 3
envoy_cluster_upstream_rq_time_sum{{cluster_name="{WEB}"}} 7.5
envoy_cluster_upstream_rq_time_count{{cluster_name="{WEB}"}} 3
envoy_cluster_upstream_rq_time_bucket{{cluster_name="{WEB_V2}",le="1"}} 2
envoy_cluster_upstream_rq_time_bucket{{cluster_name="{WEB_V2}",le="+Inf"}} 3
envoy_cluster_upstream_rq_time_sum{{cluster_name="{WEB_V2}"}} 4
envoy_cluster_upstream_rq_time_count{{cluster_name="{WEB_V2}"}} 3
envoy_cluster_upstream_rq_time_bucket{{cluster_name="{DB}",le="1"}} 0
envoy_cluster_upstream_rq_time_bucket{{cluster_name="{DB}",le="+Inf"}} 0
envoy_cluster_upstream_rq_time_sum{{cluster_name="{DB}"}} 0
envoy_cluster_upstream_rq_time_count{{cluster_name="{DB}"}} 0
# TYPE envoy_tcp_downstream_cx_total counter
envoy_tcp_downstream_cx_total{{tcp_prefix="{DB}"}} 5
envoy_tcp_downstream_cx_total{{tcp_prefix="{WEB}"}} 2
# TYPE envoy_tcp_downstream_cx_rx_bytes_total counter
envoy_tcp_downstream_cx_rx_bytes_total{{tcp_prefix="{DB}"}} 100
envoy_tcp_downstream_cx_rx_bytes_total{{tcp_prefix="{WEB}"}} 10
# TYPE envoy_tcp_downstream_cx_tx_bytes_total counter
envoy_tcp_downstream_cx_tx_bytes_total{{tcp_prefix="{DB}"}} 900
envoy_tcp_downstream_cx_tx_bytes_total{{tcp_prefix="{WEB}"}} 20
# TYPE envoy_cluster_upstream_cx_destroy counter
envoy_cluster_upstream_cx_destroy{{cluster_name="{DB}"}} 4
envoy_cluster_upstream_cx_destroy{{cluster_name="{WEB}"}} 9
# TYPE envoy_cluster_upstream_cx_active gauge
envoy_cluster_upstream_cx_active{{cluster_name="{DB}"}} 1
envoy_cluster_upstream_cx_active{{cluster_name="{WEB}"}} 1
"""

GATEWAY = Workload.from_labels("ingress", "edge", {"app": "ingress", "version": "v7"})


def derive(services: dict[str, ServiceRef | None] | None = None,
           workload: Workload = GATEWAY) -> dict[str, prometheus.Family]:
    families = prometheus.parse(ENVOY)
    return {f.name: f for f in istio_metrics.derive(families, workload, services or {})}


def series(family: prometheus.Family, **match: str) -> list[prometheus.Sample]:
    return [s for s in family.samples if all(s.label(k) == v for k, v in match.items())]


def test_cluster_names_say_direction_port_subset_and_host() -> None:
    ref = parse_cluster_name(WEB_V2)
    assert ref is not None
    assert (ref.direction, ref.port, ref.subset, ref.host) == ("outbound", "80", "v2",
                                                               "web.shop.svc.cluster.local")
    assert parse_cluster_name(INBOUND) is not None
    assert parse_cluster_name("BlackHoleCluster") is not None
    for other in ("xds-grpc", "prometheus_stats", "outbound|x||h", "sideways|80||h"):
        assert parse_cluster_name(other) is None


def test_requests_by_code_with_subsets_summed_onto_the_service() -> None:
    requests = derive()["istio_requests_total"]
    web_ok = series(requests, reporter="source", destination_service_name="web",
                    response_code="200")
    assert [s.value for s in web_ok] == ["5"]  # 3 on the default subset + 2 on v2
    [failed] = series(requests, destination_service_name="web", response_code="503")
    assert failed.value == "1"
    labels = dict(web_ok[0].labels)
    assert [k for k, _ in web_ok[0].labels] == list(istio_metrics.LABELS)
    assert labels | {
        "source_workload": "ingress", "source_workload_namespace": "edge",
        "source_app": "ingress", "source_version": "v7",
        "source_canonical_service": "ingress", "source_canonical_revision": "v7",
        "source_cluster": "Kubernetes",
        "destination_service": "web.shop.svc.cluster.local",
        "destination_service_namespace": "shop", "request_protocol": "http",
        "grpc_response_status": "", "response_flags": "-",
    } == labels
    # What only the peer or the TLS handshake could tell stays unknown.
    for key in ("destination_workload", "destination_principal", "source_principal",
                "connection_security_policy"):
        assert labels[key] == "unknown"
    # Control-plane clusters are not mesh traffic.
    assert not [s for s in requests.samples if "xds" in str(s.labels)]


def test_inbound_clusters_report_as_destination_with_the_service_from_metadata() -> None:
    sidecar = Workload.from_labels("web-v1", "shop", {"app": "web"})
    requests = derive({INBOUND: ServiceRef("web.shop.svc.cluster.local", "web", "shop")},
                      sidecar)["istio_requests_total"]
    [inbound] = series(requests, reporter="destination")
    labels = dict(inbound.labels)
    assert inbound.value == "4"
    assert (labels["destination_workload"], labels["destination_workload_namespace"]) == (
        "web-v1", "shop")
    assert labels["destination_canonical_revision"] == "latest"
    assert labels["destination_service"] == "web.shop.svc.cluster.local"
    assert labels["source_workload"] == "unknown"


def test_service_names_come_from_metadata_first_then_the_host() -> None:
    external = ServiceRef("api.example.com", "api.example.com", "partners")
    requests = derive({WEB: external})["istio_requests_total"]
    assert series(requests, destination_service="api.example.com",
                  destination_service_namespace="partners")
    assert istio_metrics.service_from_host("api.example.com") == ServiceRef(
        "api.example.com", "api.example.com", "unknown")


def test_passthrough_is_named_for_its_cluster() -> None:
    [passthrough] = series(derive()["istio_requests_total"],
                           destination_service_name="PassthroughCluster")
    assert passthrough.label("destination_service") == "unknown"
    assert passthrough.label("response_code") == "404"


def test_request_duration_histogram_sums_buckets_in_le_order() -> None:
    duration = derive()["istio_request_duration_milliseconds"]
    assert duration.type == "histogram"
    names = [(s.name.rsplit("_", 1)[-1], s.label("le")) for s in duration.samples]
    assert names == [("bucket", "1"), ("bucket", "+Inf"), ("sum", ""), ("count", "")]
    assert [s.value for s in duration.samples] == ["3", "6", "11.5", "6"]
    assert "response_code" not in dict(duration.samples[0].labels)  # Envoy has no split


def test_tcp_metrics_come_from_tcp_proxy_stats() -> None:
    derived = derive()
    db = {name: series(derived[name], destination_service_name="db")[0].value for name in (
        "istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
        "istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total")}
    assert db == {"istio_tcp_connections_opened_total": "5",
                  "istio_tcp_connections_closed_total": "4",  # upstream closes, TCP-only
                  "istio_tcp_received_bytes_total": "100",
                  "istio_tcp_sent_bytes_total": "900"}
    [tcp] = series(derived["istio_tcp_connections_opened_total"], destination_service_name="db")
    assert tcp.label("request_protocol") == "tcp"
    assert "response_code" not in dict(tcp.labels)


def test_closed_is_estimated_where_http_shares_the_cluster() -> None:
    # web also served HTTP: its 9 upstream closes include pooled HTTP connections, so
    # closed is opened (2) minus active (1), not 9.
    [closed] = series(derive()["istio_tcp_connections_closed_total"],
                      destination_service_name="web")
    assert closed.value == "1"


def test_idle_clusters_have_no_series_and_istio_output_is_left_alone() -> None:
    derived = derive()
    assert not series(derived["istio_request_duration_milliseconds"],
                      destination_service_name="db")
    native = prometheus.parse("# TYPE istio_requests_total counter\nistio_requests_total 1\n")
    assert istio_metrics.derive(native, GATEWAY, {}) == []


def test_clusters_seen_lists_istio_clusters_only() -> None:
    seen = istio_metrics.clusters_seen(prometheus.parse(ENVOY))
    assert seen == {WEB, WEB_V2, DB, INBOUND, "PassthroughCluster"}


def test_canonical_labels_fall_back_as_istio_does() -> None:
    assert Workload.from_labels("w", "n", {}).canonical_service == "w"
    explicit = Workload.from_labels("w", "n", {
        "service.istio.io/canonical-name": "shop-web", "app": "web",
        "service.istio.io/canonical-revision": "r9", "version": "v1"})
    assert (explicit.canonical_service, explicit.canonical_revision) == ("shop-web", "r9")
