"""``pilotfish discovery --kubeconfig``: objects created, changed and deleted through a
Kubernetes API server (the test kit's fake one, driven by the official client) reach a real
Envoy within a second, a watch cut off on the way included."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import kubernetes
import pytest

from pilotfish.testing.config import routes_to
from pilotfish.testing.kube import FakeKubeApi, crds, running
from pilotfish.testing.mesh import LocalMesh, Proxy
from pilotfish.testing.processes import free_port, http, wait_until

pytestmark = pytest.mark.envoy

NS = "shop"
VS = ("networking.istio.io", "v1", NS, "virtualservices")


def service(name: str, app_port: int, selector: bool = True) -> dict:
    return {"metadata": {"name": name},
            "spec": {**({"selector": {"app": name}} if selector else {}),
                     "ports": [{"name": "http", "port": 9080, "targetPort": app_port}]}}


def pod(name: str, ip: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-1", "namespace": NS, "labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "image": "demo"}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


@attrs.define
class Cluster:
    api: FakeKubeApi
    core: kubernetes.client.CoreV1Api
    custom: kubernetes.client.CustomObjectsApi
    discovery: kubernetes.client.DiscoveryV1Api
    gateway: Proxy
    url: str
    app_port: int
    took: dict[str, float] = attrs.Factory(dict)

    def lands(self, what: str, change: Callable[[], object], check: Callable[[], bool]
              ) -> None:
        """Make the change through the API server; wait (1 s at most) until Envoy shows it."""
        change()
        started = time.monotonic()
        wait_until(check, 1.0, interval=0.01, what=f"{what} to reach Envoy")
        self.took[what] = time.monotonic() - started

    def serves(self) -> str:
        response = http(self.url)
        return str(response.json()["service"]) if response.status == 200 else str(
            response.status)

    def clusters(self) -> set[str]:
        return {entry["cluster"]["name"] for section in self.gateway.config_dump()["configs"]
                for entry in section.get("dynamic_active_clusters", [])}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    app_port, gateway_port = free_port(), free_port()
    with running(tmp_path / "api") as api, \
            kubernetes.config.new_client_from_config(str(api.kubeconfig)) as client, \
            LocalMesh(tmp_path / "mesh") as mesh:
        crds.install(client)
        core = kubernetes.client.CoreV1Api(client)
        custom = kubernetes.client.CustomObjectsApi(client)
        # Discovery's own namespace, where its CA keeps the root (istio-ca-secret).
        core.create_namespace({"metadata": {"name": "istio-system"}})
        core.create_namespace({"metadata": {"name": NS}})
        for name in ("alpha", "beta"):
            core.create_namespaced_service(NS, service(name, app_port))
        api.seed(pod("alpha", "127.0.30.1"), pod("beta", "127.0.30.2"))  # as a kubelet would
        custom.create_namespaced_custom_object(*VS[:2], NS, "gateways", {
            "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw"},
            "spec": {"selector": {"istio": "ingressgateway"}, "servers": [{
                "port": {"number": gateway_port, "name": "http", "protocol": "HTTP"},
                "hosts": ["*"]}]}})
        custom.create_namespaced_custom_object(*VS, routes_to("alpha"))
        mesh.start_discovery(kubeconfig=api.kubeconfig)
        mesh.start_apps([f"alpha:v1@127.0.30.1:{app_port}", f"beta:v1@127.0.30.2:{app_port}",
                         f"legacy:v1@127.0.30.3:{app_port}"])
        gateway = mesh.start_proxy("gw", NS, labels={"istio": "ingressgateway"})
        found = Cluster(api, core, custom, kubernetes.client.DiscoveryV1Api(client), gateway,
                        f"http://127.0.0.1:{gateway_port}/", app_port)
        wait_until(lambda: found.serves() == "alpha", 10, what="the gateway to route")
        yield found


def test_created_changed_and_deleted_objects_reach_envoy_within_a_second(cluster: Cluster):
    ns = NS
    beta = f"outbound|9080||beta.{ns}.svc.cluster.local"
    legacy = f"outbound|9080||legacy.{ns}.svc.cluster.local"

    cluster.lands("a changed VirtualService", lambda: cluster.custom.patch_namespaced_custom_object(
        *VS, "shop", {"spec": routes_to("beta")["spec"]}), lambda: cluster.serves() == "beta")

    def create_legacy() -> None:
        # A Service without a selector and its EndpointSlice, as a controller would write it.
        cluster.core.create_namespaced_service(ns, service("legacy", cluster.app_port, False))
        cluster.discovery.create_namespaced_endpoint_slice(ns, {
            "metadata": {"name": "legacy-1", "labels": {"kubernetes.io/service-name":
                                                        "legacy"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.30.3"], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": cluster.app_port}]})
        cluster.custom.patch_namespaced_custom_object(*VS, "shop",
                                                      {"spec": routes_to("legacy")["spec"]})

    cluster.lands("a created Service, EndpointSlice and route", create_legacy,
                  lambda: cluster.serves() == "legacy")
    cluster.lands("a deleted Service", lambda: cluster.core.delete_namespaced_service(
        "beta", ns), lambda: beta not in cluster.clusters())

    assert cluster.api.cut_watches() > 0
    cluster.lands("a change after the watches were cut off",
                  lambda: cluster.custom.patch_namespaced_custom_object(
                      *VS, "shop", {"spec": routes_to("alpha")["spec"]}),
                  lambda: cluster.serves() == "alpha")
    cluster.lands("a deleted EndpointSlice", lambda: cluster.discovery.
                  delete_namespaced_endpoint_slice("legacy-1", ns),
                  lambda: not any(e["address"].startswith("127.0.30.3")
                                  for e in endpoints_of(cluster, legacy)))
    cluster.lands("a deleted VirtualService", lambda: cluster.custom.
                  delete_namespaced_custom_object(*VS, "shop"),
                  lambda: cluster.serves() == "404")
    print("API server → Envoy: " + ", ".join(f"{what} {took * 1000:.0f} ms"
                                             for what, took in cluster.took.items()))


def endpoints_of(cluster: Cluster, name: str) -> list[dict]:
    out = []
    for section in cluster.gateway.config_dump()["configs"]:
        for entry in section.get("dynamic_endpoint_configs", []):
            config = entry.get("endpoint_config", {})
            if config.get("cluster_name") != name:
                continue
            for group in config.get("endpoints", []):
                for lb in group.get("lb_endpoints", []):
                    address = lb["endpoint"]["address"]["socket_address"]
                    out.append({"address": f"{address['address']}:{address['port_value']}"})
    return out
