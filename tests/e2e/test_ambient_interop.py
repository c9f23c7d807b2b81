"""Sidecar, ambient and plain pods on one local node, as root, talking to each other as in
Istio: a sidecar (real Envoy) reaches an ambient pod over HBONE through its
``connect_originate``; ztunnel reaches a sidecar that takes HBONE (its ProxyConfig sets
``ISTIO_META_ENABLE_HBONE``, so its pod is labelled ``networking.istio.io/tunnel: http`` as
Istio's injector labels it) on its ``connect_terminate``, and the sidecar's own
AuthorizationPolicy sees the ambient client's SPIFFE identity; a plain pod reaches an ambient
pod in PERMISSIVE. Real CNI, iptables, Envoy, HBONE and the CA.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import mesh_config as mc
import pytest

from pilotfish.core import prometheus
from pilotfish.core.prometheus import Sample
from pilotfish.node.state import NodeState
from pilotfish.testing.node import Node, node_with, write_file
from pilotfish.testing.processes import http, wait_until
from pilotfish.testing.wire import capture

pytestmark = [pytest.mark.envoy, pytest.mark.e2e]

# Per proxy backend of the sidecars and the gateway: (subnet, bridge).
NETWORKS = {"envoy": ("10.249.0.0/24", "pfaix"), "native": ("10.243.0.0/24", "pfaiy")}

CONFIG = {
    "namespaces.yaml": """\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: mesh, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
""",
    # ambient: a client and a server
    "ambient.yaml": "---\n".join([
        mc.pod("client", "shop", {"app": "client"}, mc.serve("client")),
        mc.pod("server", "shop", {"app": "server"}, mc.serve("server")),
        mc.service("server", "shop")]),
    # sidecars: a client, and a server whose sidecar takes HBONE
    "sidecars.yaml": "---\n".join([
        mc.pod("sclient", "mesh", {"app": "sclient"}, mc.serve("sclient")),
        mc.pod("web", "mesh", {"app": "web"}, mc.serve("web"), {
            "proxy.istio.io/config": "proxyMetadata: {ISTIO_META_ENABLE_HBONE: 'true'}"}),
        mc.service("web", "mesh")]),
    # web takes calls from the ambient client's identity only
    "policy.yaml": """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-from-ambient-client, namespace: mesh}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]}]
""",
    "outsider.yaml": mc.pod("outsider", "plain", {"app": "outsider"}, mc.serve("outsider")),
    # an ingress gateway (a router pod, real Envoy) routing to the ambient server
    "gateway.yaml": """\
apiVersion: v1
kind: Namespace
metadata: {name: infra}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: server, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  hostnames: [server.example.com]
  rules: [{backendRefs: [{name: server, port: 9080}]}]
""",
}
MESH_CONFIG = "profile: [sidecar, ambient]\n"
AMBIENT_CLIENT = "spiffe://cluster.local/ns/shop/sa/client"
SIDECAR_CLIENT = "spiffe://cluster.local/ns/mesh/sa/sclient"


@pytest.fixture(scope="module", params=["envoy", "native"])
def node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Node]:
    assert os.geteuid() == 0, "the e2e tests run as root (CI does)"
    subnet, bridge = NETWORKS[request.param]
    # (the node gives each pod's agent its own readable copy of the mesh config)
    with node_with(tmp_path_factory.mktemp(f"interop-{request.param}"), CONFIG, subnet, bridge,
                   MESH_CONFIG + f"proxy: {request.param}\n") as node:
        yield node


def code(node: Node, pod: str, url: str) -> str:
    out = node.exec(pod, ["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                          url])
    return out.stdout


def works(node: Node, pod: str, url: str, timeout: float = 30) -> None:
    wait_until(lambda: code(node, pod, url) == "200", timeout, interval=0.3,
               what=f"{url} from {pod}")


def node_ip(node: Node) -> str:
    """The node's bridge address, where ztunnel serves its metrics."""
    return str(ipaddress.ip_network(node.subnet).network_address + 1)


def bridge_ports(node: Node) -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "master", node.bridge], capture_output=True,
                         text=True, check=True).stdout
    return [line.split(": ")[1].split("@")[0] for line in out.splitlines()]


def on_the_wire(node: Node, pod: str, url: str, marker: str, server: str
                ) -> tuple[list, list]:  # type: ignore[type-arg]
    """What every bridge port carries between ``pod`` and the ``server`` pod, to 15008 and
    to the apps' 8080, while ``pod`` calls ``url``: (the 15008 captures, the 8080
    captures)."""
    ports = bridge_ports(node)
    pair = (node.pod(pod.split(".")[0])["ip"], node.pod(server)["ip"])
    with ThreadPoolExecutor(2 * len(ports)) as pool:
        hbone = [pool.submit(capture, port, 15008, 3.0, marker.encode(), pair)
                 for port in ports]
        app = [pool.submit(capture, port, 8080, 3.0, marker.encode(), pair) for port in ports]
        time.sleep(0.5)
        assert code(node, pod, url) == "200"
        return [f.result() for f in hbone], [f.result() for f in app]


def test_sidecar_pod_to_ambient_pod_by_service_name(node: Node) -> None:
    works(node, "sclient.mesh", "http://server.shop:9080/")
    answer = node.curl_json("sclient.mesh", "http://server.shop:9080/")
    assert answer["service"] == "server", answer
    # ztunnel took the sidecar's tunnel and delivered it from the sidecar pod's address
    assert answer["peer"] == node.pod("sclient")["ip"]
    metrics = http(f"http://{node_ip(node)}:15020/metrics").body.decode()
    assert f'source_principal="{SIDECAR_CLIENT}"' in metrics  # ztunnel saw Envoy's identity


def test_only_tls_to_15008_between_sidecar_and_ambient_pod(node: Node) -> None:
    marker = "/wire-check-sidecar-to-ambient"
    on_hbone, on_app = on_the_wire(node, "sclient.mesh", f"http://server.shop:9080{marker}",
                                   marker, "server")
    assert sum(int(c["tls_records"]) for c in on_hbone) > 0, on_hbone
    assert not any(c["marker"] for c in on_hbone), on_hbone
    assert all(c["packets"] == 0 for c in on_app), on_app


def test_ambient_pod_to_sidecar_pod_by_service_name(node: Node) -> None:
    # ENABLE_HBONE labelled web's pod networking.istio.io/tunnel: http, so WDS told ztunnel
    # to tunnel to it; the other sidecar keeps Istio's mTLS (which ztunnel does not send)
    admin = NodeState.load(node.state_dir).ztunnel_admin  # type: ignore[union-attr]
    dump = json.loads(http(f"http://{admin}/config_dump").body)
    protocols = {w["name"]: w["protocol"] for w in dump["workloads"]}
    assert protocols["web"] == "HBONE" and protocols["sclient"] == "LEGACY_ISTIO_MTLS"
    works(node, "client.shop", "http://web.mesh:9080/")
    answer = node.curl_json("client.shop", "http://web.mesh:9080/")
    assert answer["service"] == "web", answer  # the sidecar's app saw the request
    # the headers Envoy's main_internal copies the tunnel's identities through stop there
    assert not any(h.lower().startswith("x-pilotfish-tunnel") for h in answer["headers"]), answer
    marker = "/wire-check-ambient-to-sidecar"
    on_hbone, on_app = on_the_wire(node, "client.shop", f"http://web.mesh:9080{marker}",
                                   marker, "web")
    assert sum(int(c["tls_records"]) for c in on_hbone) > 0, on_hbone
    assert not any(c["marker"] for c in on_hbone), on_hbone
    assert all(c["packets"] == 0 for c in on_app), on_app


def test_the_sidecar_sees_the_ambient_clients_identity(node: Node) -> None:
    """web's policy allows only the ambient client's SPIFFE ID: its sidecar lets the ambient
    client in (the identity came through the tunnel) and refuses the sidecar client (403)
    and the plain pod, which carry other identities or none. Its metrics say so too: the
    tunneled requests are counted as mutual TLS from the ambient client to web, though the
    hop to web's inbound chains has no TLS of its own."""
    works(node, "client.shop", "http://web.mesh:9080/")
    wait_until(lambda: code(node, "sclient.mesh", "http://web.mesh:9080/") == "403", 20,
               interval=0.3, what="web's sidecar to refuse the sidecar client")
    assert code(node, "outsider.plain", "http://web.mesh:9080/") != "200"
    assert node.config_dir is not None
    write_file(node.config_dir, "policy.yaml", CONFIG["policy.yaml"].replace(
        "cluster.local/ns/shop/sa/client", "cluster.local/ns/shop/sa/someone-else"))
    try:
        wait_until(lambda: code(node, "client.shop", "http://web.mesh:9080/") == "403", 20,
                   interval=0.3, what="web's sidecar to refuse the ambient client")
    finally:
        write_file(node.config_dir, "policy.yaml", CONFIG["policy.yaml"])
    works(node, "client.shop", "http://web.mesh:9080/")
    stats = node.exec("web.mesh", ["curl", "-s", "http://127.0.0.1:15000/stats"]).stdout
    accepted = [line for line in stats.splitlines()
                if line.startswith("listener.0.0.0.0_15008.downstream_cx_total")]
    assert accepted and int(accepted[0].split(": ")[1]) > 0, accepted
    web = f"http://{node.pod('web')['ip']}:15020/stats/prometheus"

    def tunneled() -> list[Sample] | None:
        text = http(web).body.decode()
        family = {f.name: f for f in prometheus.parse(text, "web")}.get("istio_requests_total")
        found = [s for s in family.samples if s.label("reporter") == "destination"
                 and s.label("source_principal") == AMBIENT_CLIENT
                 and s.label("response_code") == "200"] if family else []
        return found or None

    samples = wait_until(tunneled, 15, interval=0.5,
                         what="web's metrics to count the ambient client's requests")
    assert {s.label("connection_security_policy") for s in samples} == {"mutual_tls"}, samples
    assert {s.label("destination_principal") for s in samples} == {
        "spiffe://cluster.local/ns/mesh/sa/web"}, samples


def test_ambient_pod_to_a_sidecar_without_hbone_in_permissive(node: Node) -> None:
    """A sidecar that does not take HBONE (WDS: LEGACY_ISTIO_MTLS) gets plaintext from
    ztunnel, which Istio's ztunnel does too; its sidecar takes it in PERMISSIVE."""
    url = f"http://{node.pod('sclient')['ip']}:8080/"
    works(node, "client.shop", url)
    assert node.curl_json("client.shop", url)["service"] == "sclient"


def test_plain_pod_to_ambient_pod_in_permissive(node: Node) -> None:
    works(node, "outsider.plain", "http://server.shop:9080/")
    answer = node.curl_json("outsider.plain", "http://server.shop:9080/")
    assert answer["service"] == "server"
    assert answer["peer"] == node.pod("outsider")["ip"]


def test_gateway_to_ambient_pod_over_hbone(node: Node) -> None:
    """The ingress gateway's Envoy reaches the ambient server as a sidecar does: over HBONE
    with the gateway's own identity, only TLS to 15008 on the bridge."""
    router = wait_until(lambda: next((p for p in node.status()["pods"]
                                      if str(p["name"]).startswith("edge-istio-")
                                      and p["sidecar"] == "ready"), None), 60,
                        interval=0.5, what="the gateway's router pod")
    url = f"http://{router['ip']}:80"

    def through(path: str) -> object:
        try:
            answer = http(f"{url}{path}", {"Host": "server.example.com"}, timeout=3)
        except OSError:
            return None
        return answer if answer.status == 200 else None

    answer = wait_until(lambda: through("/"), 30, interval=0.3,
                        what="the gateway to route to the ambient server")
    body = json.loads(answer.body)  # type: ignore[attr-defined]
    assert body["service"] == "server" and body["peer"] == router["ip"], body
    metrics = http(f"http://{node_ip(node)}:15020/metrics").body.decode()
    assert 'source_principal="spiffe://cluster.local/ns/infra/sa/' in metrics
    marker = "/wire-check-gateway-to-ambient"
    ports = bridge_ports(node)
    pair = (router["ip"], node.pod("server")["ip"])  # other traffic to 8080 is not theirs
    with ThreadPoolExecutor(2 * len(ports)) as pool:
        hbone = [pool.submit(capture, port, 15008, 3.0, marker.encode(), pair)
                 for port in ports]
        app = [pool.submit(capture, port, 8080, 3.0, marker.encode(), pair) for port in ports]
        time.sleep(0.5)
        assert through(marker) is not None
        on_hbone, on_app = [f.result() for f in hbone], [f.result() for f in app]
    assert sum(int(c["tls_records"]) for c in on_hbone) > 0, on_hbone  # type: ignore[call-overload]
    assert not any(c["marker"] for c in on_hbone), on_hbone
    assert all(c["packets"] == 0 for c in on_app), on_app
