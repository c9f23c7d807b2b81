"""The node's controllers, without a node: Deployments to pods, Gateways to routers."""

from __future__ import annotations

import yaml

from pilotfish.core.objects import ConfigObject
from pilotfish.node import pods, workloads


def obj(text: str) -> ConfigObject:
    body = yaml.safe_load(text)
    meta = body["metadata"]
    return ConfigObject(body["apiVersion"], body["kind"], meta["name"],
                        meta.get("namespace", "default"), body)


def deployment(replicas: int | None = 2, image: str = "example/app:1") -> ConfigObject:
    count = f"replicas: {replicas}" if replicas is not None else ""
    return obj(f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  {count}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}, annotations: {{a: b}}}}
    spec: {{containers: [{{name: app, image: "{image}"}}]}}
""")


def gateway(name: str = "edge", cls: str = "istio") -> ConfigObject:
    return obj(f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: shop}}
spec:
  gatewayClassName: {cls}
  listeners: [{{name: http, port: 80, protocol: HTTP}}, {{name: alt, port: 80, protocol: HTTP,
               hostname: a.example}}, {{name: tls, port: 443, protocol: HTTPS}}]
""")


def test_safe_encode_is_kubernetes_alphabet():
    # Decimal digits are bytes 48-57: "0" is 48 % 27 = 21, "4"; as a cluster's hashes look.
    assert workloads.safe_encode("0123456789") == "456789bcdf"


def test_deployment_pods_are_named_and_labelled_as_a_replica_set_does():
    made = workloads.deployment_pods(deployment())
    assert len(made) == 2
    digest = workloads.template_hash(deployment().spec["template"])
    for pod in made:
        name, hash_part, suffix = pod.name.rsplit("-", 2)
        assert (name, hash_part) == ("web", digest) and len(suffix) == 5
        assert set(suffix) <= set(workloads.SAFE_ALPHABET)
        assert pod.labels == {"app": "web", "pod-template-hash": digest}
        assert pod.annotations == {"a": "b"} and pod.namespace == "shop"
        assert pod.spec["containers"][0]["image"] == "example/app:1"
        assert workloads.owner(pod) == "Deployment/web"
    assert made[0].name != made[1].name


def test_deployment_pods_are_stable_and_scaling_keeps_them():
    two = [p.name for p in workloads.deployment_pods(deployment(2))]
    assert two == [p.name for p in workloads.deployment_pods(deployment(2))]
    three = [p.name for p in workloads.deployment_pods(deployment(3))]
    assert three[:2] == two and len(set(three)) == 3


def test_a_template_change_replaces_every_pod():
    old = {p.name for p in workloads.deployment_pods(deployment(2))}
    new = {p.name for p in workloads.deployment_pods(deployment(2, image="example/app:2"))}
    assert not old & new


def test_replicas_default_to_one_and_zero_means_none():
    assert len(workloads.deployment_pods(deployment(None))) == 1
    assert workloads.deployment_pods(deployment(0)) == []


def test_a_served_gateway_gets_istios_deployment_service_and_account():
    made = {o.kind: o for o in workloads.gateway_objects(gateway())}
    assert set(made) == {"ServiceAccount", "Service", "Deployment"}
    assert {o.name for o in made.values()} == {"edge-istio"}
    service = made["Service"]
    assert [p["port"] for p in service.spec["ports"]] == [15021, 80, 443]
    assert service.spec["selector"] == {"gateway.networking.k8s.io/gateway-name": "edge"}
    (pod,) = workloads.deployment_pods(made["Deployment"])
    assert pod.name.startswith("edge-istio-")
    assert pod.labels["gateway.networking.k8s.io/gateway-name"] == "edge"
    assert pod.labels["sidecar.istio.io/inject"] == "false"
    assert pods.router_container(pod)
    assert pods.sysctls(pod) == [("net.ipv4.ip_unprivileged_port_start", "0")]
    (container,) = pods.containers(pod, "10.0.0.9")
    assert container.proxy == "router" and container.uid == pods.PROXY_UID


def test_infrastructure_labels_and_annotations_go_on_everything_the_controller_makes():
    edge = gateway()
    edge.spec["infrastructure"] = {"labels": {"team": "a"}, "annotations": {"key1": "value1"}}
    for made in workloads.gateway_objects(edge):
        assert made.labels["team"] == "a" and made.annotations == {"key1": "value1"}, made.kind
    deployment = next(o for o in workloads.gateway_objects(edge) if o.kind == "Deployment")
    (pod,) = workloads.deployment_pods(deployment)
    assert pod.labels["team"] == "a" and pod.annotations["key1"] == "value1"


def test_only_gateways_of_istio_classes_get_routers():
    other = gateway("other", "someone-else")
    mine = gateway("mine", "mine")
    cls = obj("""
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: mine}
spec: {controllerName: istio.io/gateway-controller}
""")
    view = workloads.cluster_view([gateway(), other, mine, cls])
    routers = sorted(p.labels["gateway.networking.k8s.io/gateway-name"] for p in view.pods)
    assert routers == ["edge", "mine"]
    istio_gateway = obj("""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: plain, namespace: shop}
spec: {selector: {istio: ingressgateway}, servers: []}
""")
    assert workloads.cluster_view([istio_gateway]).pods == ()


def test_the_cluster_view_holds_user_pods_deployment_pods_and_the_users_objects_win():
    user_pod = obj("""
apiVersion: v1
kind: Pod
metadata: {name: solo, namespace: shop}
spec: {containers: [{name: app, command: [sleep, "1"]}]}
""")
    own_service = obj("""
apiVersion: v1
kind: Service
metadata: {name: edge-istio, namespace: shop}
spec: {ports: [{port: 1}]}
""")
    view = workloads.cluster_view([user_pod, deployment(2), gateway(), own_service])
    names = [p.name for p in view.pods]
    assert "solo" in names and len(names) == 4  # solo, 2 replicas, 1 router
    assert names == sorted(names)
    services = [o for o in view.objects if o.kind == "Service"]
    assert services == [own_service]
    assert {o.name for o in view.objects if o.kind == "Pod"} == set(names)
