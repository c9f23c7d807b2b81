"""The node's cluster view: what an API server, kubelet and a load balancer fill in."""

from __future__ import annotations

import yaml

from pilotfish.core.objects import ConfigObject
from pilotfish.node import cluster


def objs(text: str) -> list[ConfigObject]:
    out = []
    for body in yaml.safe_load_all(text):
        meta = body["metadata"]
        out.append(ConfigObject(body["apiVersion"], body["kind"], meta["name"],
                                meta.get("namespace", "default"), body))
    return out


def service(name: str, ip: str, kind: str = "LoadBalancer") -> str:
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec: {{type: {kind}, loadBalancerIP: "{ip}", selector: {{app: edge}}, ports: [{{port: 80}}]}}
"""


PODS = """---
apiVersion: v1
kind: Pod
metadata: {name: edge-b, namespace: shop, labels: {app: edge}}
---
apiVersion: v1
kind: Pod
metadata: {name: edge-a, namespace: shop, labels: {app: edge}}
"""
RUNNING = {("shop", "edge-a"): cluster.PodRuntime("10.0.0.3", False),
           ("shop", "edge-b"): cluster.PodRuntime("10.0.0.4", False)}


def test_the_pool_is_the_top_of_the_subnet_and_pods_get_the_rest():
    assert cluster.load_balancer_pool("10.0.0.0/24") == ("10.0.0.240", "10.0.0.254")
    assert cluster.pod_range_end("10.0.0.0/24") == "10.0.0.239"
    assert cluster.load_balancer_pool("10.0.0.0/29") == ("10.0.0.6", "10.0.0.6")
    assert cluster.load_balancer_pool("10.0.0.0/30") == ("", "")
    assert cluster.pod_range_end("10.0.0.0/30") == ""


def test_a_load_balancer_service_gets_its_address_held_by_its_first_running_pod():
    objects = objs(PODS + service("edge", "10.0.0.250"))
    balanced = cluster.load_balancers(objects, RUNNING, "10.0.0.0/24")
    assert balanced == {("shop", "edge"): cluster.LoadBalancerAddress(
        "10.0.0.250", ("shop", "edge-a"))}
    (svc,) = [b for b in cluster.cluster_objects(objects, RUNNING, balanced=balanced)
              if b["kind"] == "Service"]
    assert svc["status"]["loadBalancer"] == {"ingress": [{"ip": "10.0.0.250"}]}
    assert svc["spec"]["clusterIP"]  # a ClusterIP as well, as Kubernetes gives


def test_addresses_outside_the_pool_taken_or_unbacked_stay_pending():
    objects = objs(PODS + service("outside", "203.0.113.1") + service("pod-range", "10.0.0.9")
                   + service("first", "10.0.0.250") + service("second", "10.0.0.250")
                   + service("cluster", "10.0.0.251", kind="ClusterIP"))
    assert set(cluster.load_balancers(objects, RUNNING, "10.0.0.0/24")) == {("shop", "first")}
    assert cluster.load_balancers(objs(PODS + service("edge", "10.0.0.250")), {},
                                  "10.0.0.0/24") == {}


def test_a_pods_resolv_conf_names_the_node_as_its_nameserver_before_the_search_path():
    text = cluster.resolv_conf("shop", "cluster.local", "10.252.0.1")
    assert text.splitlines() == [
        "nameserver 10.252.0.1",  # what an ambient pod's rules send to ztunnel's 15053
        "search shop.svc.cluster.local svc.cluster.local cluster.local",
        "options ndots:5 timeout:1 attempts:1"]
    assert "nameserver" not in cluster.resolv_conf("shop", "cluster.local")
