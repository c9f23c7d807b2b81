"""``pilotfish up --kubeconfig`` with the ambient profile: the node of a cluster whose API
server is the test kit's fake one runs the CNI node agent and ztunnel as with files; pods of
a namespace labelled ``istio.io/dataplane-mode: ambient``, created through the API server,
get no sidecar and reach each other over HBONE with their own identities. Real CNI,
iptables, HBONE and the CA's node authorization, as root."""

from __future__ import annotations

import os
from collections.abc import Iterator

import attrs
import kubernetes
import mesh_config as mc
import pytest
import yaml

from pilotfish.testing.kube import crds, running
from pilotfish.testing.node import Node, leftovers
from pilotfish.testing.processes import http, wait_until

pytestmark = [pytest.mark.e2e]

SUBNET, BRIDGE = "10.244.0.0/24", "pfka0"
NS = "shop"
GATEWAY = "10.244.0.1"  # the node's bridge address, where ztunnel serves its metrics
CLIENT = f"spiffe://cluster.local/ns/{NS}/sa/client"


@attrs.define
class Cluster:
    core: kubernetes.client.CoreV1Api
    node: Node


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    assert os.geteuid() == 0, "the e2e tests run as root (CI does)"
    workdir = tmp_path_factory.mktemp("kube-ambient")
    (workdir / "pilotfish.yaml").write_text("profile: [sidecar, ambient]\n")
    with running(workdir / "api") as api, \
            kubernetes.config.new_client_from_config(str(api.kubeconfig)) as client:
        crds.install(client)
        core = kubernetes.client.CoreV1Api(client)
        core.create_namespace({"metadata": {"name": NS, "labels": {
            "istio.io/dataplane-mode": "ambient"}}})
        core.create_namespace({"metadata": {"name": "plain"}})
        core.create_namespaced_service(NS, yaml.safe_load(mc.service("server", NS)))
        for name in ("client", "server"):
            core.create_namespaced_pod(NS, yaml.safe_load(
                mc.pod(name, NS, {"app": name}, mc.serve(name))))
        core.create_namespaced_pod("plain", yaml.safe_load(
            mc.pod("outsider", "plain", {"app": "outsider"}, mc.serve("outsider"))))
        node = Node(workdir, None, SUBNET, BRIDGE, extra_args=(
            "--kubeconfig", str(api.kubeconfig), "--mesh-config",
            str(workdir / "pilotfish.yaml")))
        netns_names: set[str] = set()
        try:
            node.start(timeout=180)
            yield Cluster(core, node)
        finally:
            netns_names |= {p["netns"] for p in node.status()["pods"]}
            node.stop()
            node.down()
            assert leftovers(node, sorted(netns_names)) == []


def test_ambient_pods_of_the_api_server_reach_each_other_with_their_identities(
        cluster: Cluster):
    node = cluster.node
    for name in ("client", "server"):
        assert node.pod(name)["proxy"] == ""  # no sidecar: ztunnel serves them
        rules = node.exec(f"{name}.{NS}", ["iptables-save", "-t", "nat"], user=0).stdout
        assert "--to-ports 15001" in rules  # Istio's in-pod rules
    answer = wait_until(lambda: node.curl_json(f"client.{NS}", f"http://server.{NS}:9080/"),
                        30, interval=0.5, what="the server to answer through ztunnel")
    assert answer["service"] == "server" and answer["peer"] == node.pod("client")["ip"]
    identities = {c["identity"] for c in node.ztunnel_dump()["certificates"]}
    assert {CLIENT, f"spiffe://cluster.local/ns/{NS}/sa/server"} <= identities
    metrics = http(f"http://{GATEWAY}:15020/metrics").body.decode()
    assert 'reporter="destination"' in metrics and f'source_principal="{CLIENT}"' in metrics


def test_ztunnels_pod_is_in_the_api_server_and_run_by_the_node(cluster: Cluster):
    """What ztunnel's DaemonSet would make: the CA finds ztunnel's node through it."""
    pod = cluster.core.read_namespaced_pod(f"ztunnel-{BRIDGE}", "istio-system")
    assert pod.spec.service_account_name == "ztunnel" and pod.spec.host_network
    wait_until(lambda: cluster.core.read_namespaced_pod(
        f"ztunnel-{BRIDGE}", "istio-system").status.phase == "Running", 30, interval=0.5,
        what="the node to write ztunnel's pod status")
    assert f"ztunnel-{BRIDGE}" not in {p["name"] for p in cluster.node.status()["pods"]}


def test_a_pod_labelled_into_ambient_through_the_api_server_is_captured(cluster: Cluster):
    cluster.core.patch_namespaced_pod("outsider", "plain", {"metadata": {"labels": {
        "istio.io/dataplane-mode": "ambient"}}})

    def captured() -> bool:
        return any(p["name"] == "outsider" for p in cluster.node.ztunnel_dump()["pods"].values())

    wait_until(captured, 30, interval=0.3, what="ztunnel to serve the relabelled pod")
    answer = wait_until(lambda: cluster.node.curl_json(
        "outsider.plain", f"http://server.{NS}:9080/"), 30, interval=0.5,
        what="the relabelled pod to reach the server")
    assert answer["service"] == "server"
    identities = {c["identity"] for c in cluster.node.ztunnel_dump()["certificates"]}
    assert "spiffe://cluster.local/ns/plain/sa/outsider" in identities
