"""TPROXY inbound capture on the local node, as root, on both proxies.

A pod annotated ``sidecar.istio.io/interceptionMode: TPROXY`` gets istio-iptables' mangle
rules and policy routing; its sidecar runs as Istio's injector runs it then (uid 0, gid
1337, NET_ADMIN only) and is told the mode, so discovery makes its capture listeners
transparent and adds ``original_src`` (mark 1337) to virtualInbound. What that buys is the
client's own address at the server: over HTTP and raw TCP, from a sidecar (mutual TLS
between the proxies) and from a pod outside the mesh (plaintext).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pilotfish.testing.node import Node, leftovers

pytestmark = [pytest.mark.envoy, pytest.mark.e2e]

# Own bridges and subnets: other node tests may run beside these.
SUBNETS = {"envoy": ("10.246.0.0/24", "pftp0"), "native": ("10.246.1.0/24", "pftp1")}
TPROXY = {"sidecar.istio.io/interceptionMode": "TPROXY"}
APP = [sys.executable, "-m", "pilotfish.demo.app"]
# Answers each connection with the address it came from: what TPROXY keeps.
PEER_SERVER = """\
import os, socket
server = socket.create_server((os.environ["POD_IP"], 9000))
while True:
    conn, peer = server.accept()
    with conn:
        conn.recv(64)
        conn.sendall(peer[0].encode() + b"\\n")
"""
PEER_CLIENT = """\
import socket, sys
with socket.create_connection((sys.argv[1], 9000), timeout=5) as conn:
    conn.sendall(b"who am I?\\n")
    print(conn.recv(64).decode().strip())
"""
POD_IP = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]


def pod(name: str, namespace: str, containers: list[dict[str, Any]],
        annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name},
                         "annotations": annotations or {}},
            "spec": {"containers": containers}}


def demo_app(name: str) -> dict[str, Any]:
    return {"name": "app", "command": APP, "args": ["--serve", f"{name}:v1@$(POD_IP):8080"],
            "env": POD_IP, "ports": [{"containerPort": 8080}]}


def documents() -> list[dict[str, Any]]:
    peer = {"name": "peer", "command": [sys.executable, "-c", PEER_SERVER], "env": POD_IP,
            "ports": [{"containerPort": 9000}]}
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "tp", "labels": {"istio-injection": "enabled"}}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "plain"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "server", "namespace": "tp"},
         "spec": {"selector": {"app": "server"}, "ports": [
             {"name": "http", "port": 9080, "targetPort": 8080},
             {"name": "tcp-peer", "port": 9000, "targetPort": 9000}]}},
        pod("server", "tp", [demo_app("server"), peer], TPROXY),
        pod("client", "tp", [demo_app("client")]),
        pod("outsider", "plain", [demo_app("outsider")]),
    ]


@pytest.fixture(scope="module", params=["envoy", "native"])
def node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Node]:
    assert os.geteuid() == 0, "the e2e tests run as root (CI does)"
    workdir = tmp_path_factory.mktemp("tproxy")
    config = workdir / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(yaml.safe_dump_all(documents()))
    subnet, bridge = SUBNETS[request.param]
    node = Node(workdir, config, subnet, bridge, extra_args=("--proxy", request.param))
    try:
        node.start()
        assert node.config_errors() == []
        yield node
    finally:
        netns_names = [p["netns"] for p in node.status()["pods"]]
        node.stop()
        node.down()
        assert leftovers(node, netns_names) == []


def tcp_peer(node: Node, pod: str, host: str) -> str:
    return node.python(pod, PEER_CLIENT.replace("sys.argv[1]", repr(host))).strip()


def inbound_connections(node: Node, port: int) -> int:
    stats = node.exec("server", ["curl", "-s", "-m", "5", "127.0.0.1:15000/stats"]).stdout
    # Envoy names the cluster's stats by its alt_stat_name, "inbound|PORT||;"
    names = (f"cluster.inbound|{port}||.upstream_cx_total:",
             f"cluster.inbound|{port}||;.upstream_cx_total:")
    lines = [line for line in stats.splitlines() if line.startswith(names)]
    return int(lines[0].split(":")[1]) if lines else 0


def test_the_server_sees_the_client_pods_address_over_http(node: Node):
    client = node.pod("client")["ip"]
    body = node.curl_json("client", "http://server:9080/tproxy")
    assert body["service"] == "server"
    assert body["peer"] == client  # not 127.0.0.6, as REDIRECT's inbound gives
    assert inbound_connections(node, 8080) > 0  # and it went through the server's sidecar


def test_the_server_sees_the_client_pods_address_over_tcp(node: Node):
    before = inbound_connections(node, 9000)
    assert tcp_peer(node, "client", "server") == node.pod("client")["ip"]
    assert inbound_connections(node, 9000) > before


def test_a_pod_outside_the_mesh_keeps_its_address_too(node: Node):
    outsider, server = node.pod("outsider")["ip"], node.pod("server")["ip"]
    body = node.curl_json("outsider", f"http://{server}:8080/plaintext")
    assert body["peer"] == outsider and "x-request-id" in body["headers"]
    assert tcp_peer(node, "outsider", server) == outsider


def test_the_sidecar_runs_as_istio_injects_it_for_tproxy(node: Node):
    # uid 0, gid 1337, NET_ADMIN alone (Istio: runAsUser 0, runAsGroup 1337, add NET_ADMIN)
    netns = node.pod("server")["netns"]
    pids = os.popen(f"ip netns pids {netns}").read().split()
    agents = [pid for pid in pids if "agent" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert agents, pids
    status = dict(line.split(":", 1) for line in
                  Path(f"/proc/{agents[0]}/status").read_text().splitlines() if ":" in line)
    assert status["Uid"].split()[0] == "0" and status["Gid"].split()[0] == "1337"
    assert int(status["CapEff"], 16) == 1 << 12  # CAP_NET_ADMIN
