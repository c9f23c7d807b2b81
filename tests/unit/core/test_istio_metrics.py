"""The labels of Istio's metrics that the cluster name and metadata give."""

from __future__ import annotations

from pilotfish.core import istio_metrics
from pilotfish.core.istio_metrics import ServiceRef, Workload, parse_cluster_name

WEB = "outbound|80||web.shop.svc.cluster.local"
WEB_V2 = "outbound|80|v2|web.shop.svc.cluster.local"
DB = "outbound|5432||db.shop.svc.cluster.local"
INBOUND = "inbound|8080||"

GATEWAY = Workload.from_labels("ingress", "edge", {"app": "ingress", "version": "v7"})


def labels(cluster: str, service: ServiceRef | None = None,
           workload: Workload = GATEWAY) -> dict[str, str]:
    ref = parse_cluster_name(cluster)
    assert ref is not None
    return istio_metrics.series_labels(ref, workload, service)


def test_cluster_names_say_direction_port_subset_and_host() -> None:
    ref = parse_cluster_name(WEB_V2)
    assert ref is not None
    assert (ref.direction, ref.port, ref.subset, ref.host) == ("outbound", "80", "v2",
                                                               "web.shop.svc.cluster.local")
    assert parse_cluster_name(INBOUND) is not None
    assert parse_cluster_name("BlackHoleCluster") is not None
    for other in ("xds-grpc", "prometheus_stats", "outbound|x||h", "sideways|80||h"):
        assert parse_cluster_name(other) is None


def test_inbound_clusters_report_as_destination_with_the_service_from_metadata() -> None:
    sidecar = Workload.from_labels("web-v1", "shop", {"app": "web"})
    found = labels(INBOUND, ServiceRef("web.shop.svc.cluster.local", "web", "shop"), sidecar)
    assert found["reporter"] == "destination"
    assert (found["destination_workload"], found["destination_workload_namespace"]) == (
        "web-v1", "shop")
    assert found["destination_canonical_revision"] == "latest"
    assert found["destination_service"] == "web.shop.svc.cluster.local"
    assert found["source_workload"] == "unknown"


def test_outbound_clusters_report_as_source_with_the_service_from_the_host() -> None:
    found = labels(WEB_V2)
    assert found["reporter"] == "source" and found["source_workload"] == "ingress"
    assert (found["destination_service_name"], found["destination_service_namespace"]) == (
        "web", "shop")


def test_service_names_come_from_metadata_first_then_the_host() -> None:
    external = ServiceRef("api.example.com", "api.example.com", "partners")
    found = labels(WEB, external)
    assert (found["destination_service"], found["destination_service_namespace"]) == (
        "api.example.com", "partners")
    assert istio_metrics.service_from_host("api.example.com") == ServiceRef(
        "api.example.com", "api.example.com", "unknown")


def test_passthrough_is_named_for_its_cluster() -> None:
    found = labels("PassthroughCluster")
    assert found["destination_service_name"] == "PassthroughCluster"
    assert found["destination_service"] == "unknown" and found["reporter"] == "source"


def test_canonical_labels_fall_back_as_istio_does() -> None:
    assert Workload.from_labels("w", "n", {}).canonical_service == "w"
    explicit = Workload.from_labels("w", "n", {
        "service.istio.io/canonical-name": "shop-web", "app": "web",
        "service.istio.io/canonical-revision": "r9", "version": "v1"})
    assert (explicit.canonical_service, explicit.canonical_revision) == ("shop-web", "r9")
