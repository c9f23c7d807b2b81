"""The local node as a cluster runs the Gateway API suite's infrastructure: Deployments
become pods, a Gateway API Gateway gets a router pod (Istio's deployment controller), and
the echo-basic image runs pilotfish's echo backend. Real CNI, iptables and Envoy, as root;
all of it again with the native proxy as the sidecars' and the router's.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotfish.testing.node import Node, leftovers
from pilotfish.testing.processes import http, wait_until

pytestmark = [pytest.mark.envoy, pytest.mark.e2e]

# Per proxy backend of the sidecars and the router: (subnet, bridge).
NETWORKS = {"envoy": ("10.253.0.0/24", "pft3"), "native": ("10.242.0.0/24", "pft4")}
ECHO_IMAGE = "registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0"

NAMESPACES = """\
apiVersion: v1
kind: Namespace
metadata: {name: mesh, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: infra}
"""


def deployment(replicas: int) -> str:
    # As the suite's base manifests write their backends: no command, the downward API.
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: infra, labels: {{app: echo}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      containers:
      - name: echo
        image: {ECHO_IMAGE}
        env:
        - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
        - {{name: NAMESPACE, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
        ports: [{{containerPort: 3000}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: infra}}
spec:
  selector: {{app: echo}}
  ports: [{{name: http, port: 8080, targetPort: 3000}}]
"""


CLIENT = """\
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: mesh, labels: {app: client}}
spec:
  containers:
  - name: app
    command: [sleep, infinity]
"""

GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo, namespace: infra}
spec:
  parentRefs: [{name: edge}]
  hostnames: [echo.example.com]
  rules:
  - backendRefs: [{name: echo, port: 8080}]
"""


def write(folder: Path, name: str, text: str) -> None:
    tmp = folder / f".{name}.tmp"
    tmp.write_text(text)
    tmp.replace(folder / name)


@pytest.fixture(scope="module", params=["envoy", "native"])
def node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Node]:
    assert os.geteuid() == 0, "the e2e tests run as root (CI does)"
    subnet, bridge = NETWORKS[request.param]
    workdir = tmp_path_factory.mktemp(f"workloads-{request.param}")
    config = workdir / "config"
    config.mkdir()
    write(config, "namespaces.yaml", NAMESPACES)
    write(config, "echo.yaml", deployment(2))
    write(config, "client.yaml", CLIENT)
    write(config, "gateway.yaml", GATEWAY)
    node = Node(workdir, config, subnet, bridge, extra_args=("--proxy", request.param))
    netns_names: set[str] = set()
    try:
        started = time.monotonic()
        node.start()
        print(f"node up with 5 pods in {time.monotonic() - started:.1f}s")
        assert node.config_errors() == []
        yield node
    finally:
        netns_names |= {p["netns"] for p in node.status()["pods"]}
        node.stop()
        node.down()
        assert leftovers(node, sorted(netns_names)) == []


def pods_of(node: Node, prefix: str) -> list[dict[str, object]]:
    return [p for p in node.status()["pods"] if str(p["name"]).startswith(prefix)]


def test_a_deployment_becomes_its_replicas(node: Node):
    echo = pods_of(node, "echo-")
    assert len(echo) == 2, node.status()["pods"]
    assert all(p["owner"] == "Deployment/echo" and p["status"] == "running" for p in echo)
    assert all(p["namespace"] == "infra" and p["proxy"] == "" for p in echo)
    # <deployment>-<pod-template-hash>-<suffix>, one hash for both
    assert len({str(p["name"]).rsplit("-", 1)[0] for p in echo}) == 1


def test_a_service_reaches_every_replica_from_a_sidecar(node: Node):
    code = (
        "import json, urllib.request\n"
        "names = set()\n"
        "for _ in range(30):\n"
        "    body = json.load(urllib.request.urlopen('http://echo.infra:8080/hi', timeout=5))\n"
        "    names.add((body['pod'], body['namespace'], body['path']))\n"
        "print(json.dumps(sorted(names)))\n"
    )
    seen = json.loads(node.python("client", code))
    echo = sorted(str(p["name"]) for p in pods_of(node, "echo-"))
    assert seen == [[name, "infra", "/hi"] for name in echo]
    assert node.pod("client")["sidecar"] == "ready"


def router(node: Node) -> dict[str, object]:
    found = pods_of(node, "edge-istio-")
    assert len(found) == 1, node.status()["pods"]
    return found[0]


def test_a_gateway_gets_a_router_pod_serving_its_routes(node: Node):
    pod = router(node)
    assert pod["proxy"] == "router" and pod["sidecar"] == "ready"
    assert pod["owner"] == "Deployment/edge-istio" and pod["namespace"] == "infra"
    answer = wait_until(lambda: _through_gateway(str(pod["ip"])), 30,
                        what="the router to serve the HTTPRoute")
    body = json.loads(answer.body)
    echo = {str(p["name"]) for p in pods_of(node, "echo-")}
    assert body["pod"] in echo and body["namespace"] == "infra"
    assert body["host"] == "echo.example.com" and body["path"] == "/through?gateway=1"
    assert answer.headers["content-type"] == "application/json"
    # The Gateway's address is its router pod's, as in a cluster.
    statuses = json.loads(http(f"{node.debug}/debug/gateway_status").body)
    gateway = next(s for s in statuses if s["kind"] == "Gateway" and s["name"] == "edge")
    assert gateway["status"]["addresses"] == [{"type": "IPAddress", "value": pod["ip"]}]


def _through_gateway(ip: str) -> object:
    try:
        answer = http(f"http://{ip}:80/through?gateway=1", {"Host": "echo.example.com"},
                      timeout=3)
    except OSError:
        return None
    return answer if answer.status == 200 else None


def test_scaling_keeps_the_replicas_there_and_adds_one(node: Node):
    before = {str(p["name"]) for p in pods_of(node, "echo-")}
    write(node.config_dir, "echo.yaml", deployment(3))
    wait_until(lambda: len([p for p in pods_of(node, "echo-") if p["status"] == "running"])
               == 3, 30, what="a third replica")
    after = {str(p["name"]) for p in pods_of(node, "echo-")}
    assert before < after


def gateway_status(node: Node) -> dict[str, object]:
    statuses = json.loads(http(f"{node.debug}/debug/gateway_status").body)
    found = next(s for s in statuses if s["kind"] == "Gateway" and s["name"] == "edge")
    return dict(found["status"])


def test_an_address_the_gateway_asks_for_comes_from_the_nodes_load_balancer(node: Node):
    # GatewayStaticAddresses: the address from the pool at the subnet's top, held by the
    # router pod (which keeps running), taken back when the Gateway stops asking
    pod = router(node)
    wanted = str(ipaddress.ip_network(node.subnet).network_address + 250)
    asking = GATEWAY.replace("  listeners:\n",
                             f"  addresses: [{{value: {wanted}}}]\n  listeners:\n", 1)
    write(node.config_dir, "gateway.yaml", asking)
    wait_until(lambda: _through_gateway(wanted), 30, what=f"the router to answer on {wanted}")
    status = gateway_status(node)
    assert status["addresses"] == [{"type": "IPAddress", "value": wanted}]
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Programmed"] == "Programmed"
    assert router(node)["name"] == pod["name"]
    write(node.config_dir, "gateway.yaml", GATEWAY)
    wait_until(lambda: gateway_status(node)["addresses"] == [
        {"type": "IPAddress", "value": pod["ip"]}], 30, what="the router's own address back")
    wait_until(lambda: _through_gateway(wanted) is None, 30, what=f"{wanted} to be let go")


def test_deleting_the_gateway_removes_its_router_pod(node: Node):
    # in the background: a pod asked for meanwhile starts while the router still drains
    pod = router(node)
    (node.config_dir / "gateway.yaml").unlink()
    write(node.config_dir, "late.yaml", CLIENT.replace("name: client,", "name: late,"))
    started = time.monotonic()
    wait_until(lambda: any(p["status"] == "running" for p in pods_of(node, "late")), 30,
               what="the late pod to start")
    assert [p["status"] for p in pods_of(node, "edge-istio-")] == ["terminating"]
    wait_until(lambda: not pods_of(node, "edge-istio-"), 30, what="the router pod to go")
    print(f"router pod removed in {time.monotonic() - started:.1f}s")
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert str(pod["netns"]) not in names.split()
    assert not (Path("/etc/netns") / str(pod["netns"])).exists()
    assert pods_of(node, "echo-")  # the rest stays
