"""The Envoy admin handle's pure parts: the services behind clusters, from a config dump."""

from __future__ import annotations

from pilotfish.core.istio_metrics import ServiceRef
from pilotfish.plugins.envoy.admin import services_from_config_dump


def test_services_come_from_the_istio_metadata_of_each_cluster() -> None:
    dump = {"configs": [
        {"cluster": {"name": "inbound|8080||", "metadata": {"filter_metadata": {"istio": {
            "services": [{"host": "web.shop.svc.cluster.local", "name": "web",
                          "namespace": "shop"}]}}}}},
        {"cluster": {"name": "BlackHoleCluster"}},
        {"cluster": {}},
    ]}
    assert services_from_config_dump(dump) == {
        "inbound|8080||": ServiceRef("web.shop.svc.cluster.local", "web", "shop"),
        "BlackHoleCluster": None,
    }
    assert services_from_config_dump([]) == {}
