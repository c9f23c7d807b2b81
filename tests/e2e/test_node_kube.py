"""``pilotfish up --kubeconfig``: the local node as the one node of a cluster whose API
server is the test kit's fake one. A Deployment applied through the API server has its pods
admitted by discovery's injection webhook (called over TLS by the API server), run in
network namespaces with the sidecar the webhook added, their tokens from TokenRequest; a
client pod reaches them through the mesh with mutual TLS; a VirtualService applied through
the API server moves the traffic. Real CNI, iptables and Envoy, as root."""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections import Counter
from collections.abc import Iterator

import attrs
import kubernetes
import pytest

from pilotfish.testing.kube import FakeKubeApi, crds, running
from pilotfish.testing.node import Node, leftovers
from pilotfish.testing.processes import http, wait_until

pytestmark = [pytest.mark.envoy, pytest.mark.e2e]

# Per proxy backend of the sidecars: (subnet, bridge).
NETWORKS = {"envoy": ("10.247.0.0/24", "pfk0"), "native": ("10.239.0.0/24", "pfk1")}
NS = "shop"
ECHO_IMAGE = "registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0"
NETWORKING = ("networking.istio.io", "v1")


def web(version: str) -> dict:
    labels = {"app": "web", "version": version}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"web-{version}", "namespace": NS},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "serviceAccountName": "web",
                         "containers": [{
                             "name": "web", "image": ECHO_IMAGE,
                             "env": [{"name": "POD_NAME", "valueFrom": {
                                 "fieldRef": {"fieldPath": "metadata.name"}}}],
                             "ports": [{"name": "http", "containerPort": 3000}]}]}}}}


CLIENT = {"apiVersion": "v1", "kind": "Pod",
          "metadata": {"name": "client", "namespace": NS, "labels": {"app": "client"}},
          "spec": {"serviceAccountName": "client",
                   "containers": [{"name": "app", "image": "debian",
                                   "command": ["sleep", "infinity"]}]}}


@attrs.define
class Cluster:
    api: FakeKubeApi
    core: kubernetes.client.CoreV1Api
    custom: kubernetes.client.CustomObjectsApi
    node: Node

    def pods(self) -> list:
        return self.core.list_namespaced_pod(NS).items

    def call_web(self) -> dict:
        out = self.node.exec("client", ["curl", "-s", "-m", "5", f"http://web.{NS}:8080/"])
        assert out.returncode == 0, f"curl: {out.returncode} {out.stderr}"
        return dict(json.loads(out.stdout))

    def versions(self, count: int) -> Counter[str]:
        return Counter(self.call_web()["pod"].split("-")[1] for _ in range(count))


@pytest.fixture(scope="module", params=["envoy", "native"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Cluster]:
    assert os.geteuid() == 0, "the e2e tests run as root (CI does)"
    subnet, bridge = NETWORKS[request.param]
    workdir = tmp_path_factory.mktemp(f"kube-node-{request.param}")
    with running(workdir / "api") as api, \
            kubernetes.config.new_client_from_config(str(api.kubeconfig)) as client:
        crds.install(client)
        core = kubernetes.client.CoreV1Api(client)
        core.create_namespace({"metadata": {"name": NS, "labels": {"istio-injection":
                                                                   "enabled"}}})
        core.create_namespaced_service(NS, {"metadata": {"name": "web"}, "spec": {
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 8080, "targetPort": 3000}]}})
        apps = kubernetes.client.AppsV1Api(client)
        for version in ("v1", "v2"):
            apps.create_namespaced_deployment(NS, web(version))
        core.create_namespaced_pod(NS, CLIENT)  # before the webhook exists: no sidecar yet
        node = Node(workdir, None, subnet, bridge,
                    extra_args=("--kubeconfig", str(api.kubeconfig), "--proxy", request.param))
        netns_names: set[str] = set()
        try:
            started = time.monotonic()
            node.start(timeout=180)
            print(f"node up in {time.monotonic() - started:.1f}s")
            yield Cluster(api, core, kubernetes.client.CustomObjectsApi(client), node)
        finally:
            netns_names |= {p["netns"] for p in node.status()["pods"]}
            node.stop()
            node.down()
            assert leftovers(node, sorted(netns_names)) == []


def test_deployment_pods_are_created_through_the_api_server_and_injected(cluster: Cluster):
    pods = {p.metadata.name: p for p in cluster.pods()}
    web = [p for name, p in pods.items() if name.startswith("web-")]
    assert len(web) == 2
    for pod in web:
        containers = [c.name for c in [*pod.spec.containers, *(pod.spec.init_containers or ())]]
        assert "istio-proxy" in containers, containers  # added by the webhook
        assert "sidecar.istio.io/status" in pod.metadata.annotations
        assert pod.metadata.labels["security.istio.io/tlsMode"] == "istio"
        assert pod.status.phase == "Running"
        assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(
            cluster.node.subnet)
        assert pod.metadata.owner_references[0].kind == "ReplicaSet"
    node_pods = {p["name"]: p for p in cluster.node.status()["pods"]}
    assert all(node_pods[pod.metadata.name]["proxy"] == "sidecar" for pod in web)


def test_a_pod_created_before_the_webhook_has_no_sidecar(cluster: Cluster):
    client = cluster.core.read_namespaced_pod("client", NS)
    assert "istio-proxy" not in [c.name for c in client.spec.containers]
    assert cluster.node.pod("client")["proxy"] == ""


def test_the_service_reaches_both_versions_through_the_mesh(cluster: Cluster):
    service = cluster.core.read_namespaced_service("web", NS)
    assert service.spec.cluster_ip.startswith("10.96.")  # the API server's allocation
    wait_until(lambda: set(cluster.versions(6)) == {"v1", "v2"}, 30, interval=0.5,
               what="both versions to answer")


def test_a_sidecar_pod_is_reached_with_mutual_tls(cluster: Cluster):
    """The client pod replaced by one the webhook injects: its sidecar's identity comes
    from its TokenRequest token (service account ``client``), and an AuthorizationPolicy
    applied through the API server allows that principal alone."""
    cluster.core.delete_namespaced_pod("client", NS)
    wait_until(lambda: "client" not in {p["name"] for p in cluster.node.status()["pods"]},
               60, interval=0.5, what="the node to remove the old client pod")
    cluster.core.create_namespaced_pod(NS, CLIENT)
    wait_until(lambda: any(
        p["name"] == "client" and p["proxy"] == "sidecar" and p["status"] == "running"
        for p in cluster.node.status()["pods"]), 60, interval=0.5,
        what="the injected client pod to run")
    security = ("security.istio.io", "v1")

    def only(principal: str) -> dict:
        return {"apiVersion": "/".join(security), "kind": "AuthorizationPolicy",
                "metadata": {"name": "web-callers"},
                "spec": {"selector": {"matchLabels": {"app": "web"}}, "action": "ALLOW",
                         "rules": [{"from": [{"source": {"principals": [principal]}}]}]}}

    def status() -> str:
        out = cluster.node.exec("client", ["curl", "-s", "-o", "/dev/null", "-w",
                                           "%{http_code}", "-m", "5", f"http://web.{NS}:8080/"])
        return out.stdout

    cluster.custom.create_namespaced_custom_object(
        *security, NS, "authorizationpolicies", only(f"cluster.local/ns/{NS}/sa/client"))
    wait_until(lambda: status() == "200", 60, interval=0.5, what="the client to be allowed")
    cluster.custom.patch_namespaced_custom_object(
        *security, NS, "authorizationpolicies", "web-callers",
        only(f"cluster.local/ns/{NS}/sa/someone-else"))
    wait_until(lambda: status() == "403", 30, interval=0.5, what="the client to be denied")
    cluster.custom.delete_namespaced_custom_object(*security, NS, "authorizationpolicies",
                                                   "web-callers")
    wait_until(lambda: status() == "200", 30, interval=0.5, what="the client to be allowed")
    # Several web pods may serve the calls; any one of them may have served none.
    webs = [p["name"] for p in cluster.node.status()["pods"] if p["name"].startswith("web")]
    handshakes, seen = 0, []
    for web in webs:
        stats = cluster.node.exec(web, ["curl", "-s", "-m", "5", "127.0.0.1:15000/stats"]).stdout
        lines = [line for line in stats.splitlines()
                 if line.startswith("listener.0.0.0.0_15006.ssl.handshake:")]
        seen.append((web, lines))
        handshakes += sum(int(line.split(":")[1]) for line in lines)
    assert handshakes > 0, seen


def test_a_virtual_service_through_the_api_server_moves_the_traffic(cluster: Cluster):
    group, version = NETWORKING
    cluster.custom.create_namespaced_custom_object(group, version, NS, "destinationrules", {
        "apiVersion": f"{group}/{version}", "kind": "DestinationRule",
        "metadata": {"name": "web"},
        "spec": {"host": "web", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                            {"name": "v2", "labels": {"version": "v2"}}]}})
    cluster.custom.create_namespaced_custom_object(group, version, NS, "virtualservices", {
        "apiVersion": f"{group}/{version}", "kind": "VirtualService",
        "metadata": {"name": "web"},
        "spec": {"hosts": ["web"], "http": [{"route": [
            {"destination": {"host": "web", "subset": "v2"}}]}]}})
    wait_until(lambda: cluster.versions(10) == Counter({"v2": 10}), 30, interval=0.5,
               what="every request to go to v2")
    assert cluster.versions(20) == Counter({"v2": 20})


def test_a_gateway_through_the_api_server_gets_a_router_pod(cluster: Cluster):
    """Istio's deployment controller, for the API server: the Gateway's Deployment,
    Service and ServiceAccount are applied there, its pod run as a router, and removed
    with the Gateway."""
    group, version = "gateway.networking.k8s.io", "v1"
    cluster.custom.create_namespaced_custom_object(group, version, NS, "gateways", {
        "apiVersion": f"{group}/{version}", "kind": "Gateway", "metadata": {"name": "edge"},
        "spec": {"gatewayClassName": "istio", "listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP"}]}})
    cluster.custom.create_namespaced_custom_object(group, version, NS, "httproutes", {
        "apiVersion": f"{group}/{version}", "kind": "HTTPRoute", "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"name": "edge"}], "hostnames": ["web.example.com"],
                 "rules": [{"backendRefs": [{"name": "web", "port": 8080}]}]}})

    def router() -> dict | None:
        return next((p for p in cluster.node.status()["pods"]
                     if p["name"].startswith("edge-istio-") and p["sidecar"] == "ready"), None)

    pod = wait_until(router, 60, interval=0.5, what="the Gateway's router pod")
    assert pod["proxy"] == "router" and pod["owner"] == "Deployment/edge-istio"
    apps = kubernetes.client.AppsV1Api(cluster.core.api_client)
    assert apps.read_namespaced_deployment("edge-istio", NS).metadata.owner_references[
        0].kind == "Gateway"

    def through() -> dict | None:
        try:
            answer = http(f"http://{pod['ip']}:80/", {"Host": "web.example.com"}, timeout=3)
        except OSError:
            return None
        return dict(json.loads(answer.body)) if answer.status == 200 else None

    body = wait_until(through, 30, interval=0.5, what="the router to serve the HTTPRoute")
    assert body["pod"].startswith("web-") and body["host"] == "web.example.com"

    # discovery (the Lease's holder) writes the Gateway API status back to the objects
    def conditions(plural: str, name: str) -> dict:
        status = cluster.custom.get_namespaced_custom_object(group, version, NS, plural,
                                                             name).get("status") or {}
        found = status.get("conditions") or (status.get("parents") or [{}])[0].get(
            "conditions") or []
        return {c["type"]: c["status"] for c in found}

    wait_until(lambda: conditions("gateways", "edge").get("Programmed") == "True", 30,
               interval=0.5, what="the Gateway's status in the API server")
    assert conditions("gateways", "edge")["Accepted"] == "True"
    wait_until(lambda: conditions("httproutes", "web").get("Accepted") == "True", 30,
               interval=0.5, what="the HTTPRoute's status in the API server")

    cluster.custom.delete_namespaced_custom_object(group, version, NS, "gateways", "edge")
    wait_until(lambda: not [p for p in cluster.node.status()["pods"]
                            if p["name"].startswith("edge-istio-")], 60, interval=0.5,
               what="the router pod to go")
    assert "edge-istio" not in {s.metadata.name for s in
                                cluster.core.list_namespaced_service(NS).items}
