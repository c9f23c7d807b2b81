"""Ambient mode on the local node, end to end, as root: ``pilotfish up`` with the ambient
profile runs the CNI node agent and ztunnel beside discovery; pods of a namespace labelled
``istio.io/dataplane-mode: ambient`` get no sidecar, Istio's in-pod rules and ztunnel's
sockets in their namespaces. Real CNI, iptables, HBONE and the CA's node authorization.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mesh_config as mc
import pytest

from pilotfish.testing.node import Node, node_with, write_file
from pilotfish.testing.processes import http, wait_until
from pilotfish.testing.wire import capture

pytestmark = [pytest.mark.e2e]

SUBNET = "10.252.0.0/24"
BRIDGE = "pfamb"

CONFIG = {
    "namespaces.yaml": """\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
""",
    "client.yaml": mc.pod("client", "shop", {"app": "client"}, mc.serve("client")),
    "server.yaml": mc.pod("server", "shop", {"app": "server"}, mc.serve("server")) + "---\n"
    + mc.service("server", "shop"),
    "outsider.yaml": mc.pod("outsider", "plain", {"app": "outsider"}, mc.serve("outsider")),
}
MESH_CONFIG = "profile: [sidecar, ambient]\n"
CLIENT = "spiffe://cluster.local/ns/shop/sa/client"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    assert os.geteuid() == 0, "the e2e tests run as root (CI does)"
    with node_with(tmp_path_factory.mktemp("ambient"), CONFIG, SUBNET, BRIDGE,
                   MESH_CONFIG) as node:
        yield node


def get(node: Node, pod: str, url: str) -> subprocess.CompletedProcess[str]:
    return node.exec(pod, ["curl", "-s", "-m", "5", "-o", "/dev/stdout", "-w",
                           "\n%{http_code}", url])


def test_ambient_pod_to_ambient_pod_by_service_name(node: Node) -> None:
    answer = node.curl_json("client.shop", "http://server.shop:9080/")
    assert answer["service"] == "server", answer
    # ztunnel delivered it from the client pod's own address
    assert answer["peer"] == node.pod("client")["ip"]
    dump = node.ztunnel_dump()
    identities = {c["identity"] for c in dump["certificates"]}  # type: ignore[index]
    assert {CLIENT, "spiffe://cluster.local/ns/shop/sa/server"} <= identities
    metrics = http("http://10.252.0.1:15020/metrics").body.decode()
    assert 'reporter="destination"' in metrics and f'source_principal="{CLIENT}"' in metrics


def test_no_sidecar_and_no_capability_in_ambient_pods(node: Node) -> None:
    for name in ("client", "server"):
        pod = node.pod(name)
        assert pod["proxy"] == ""
        out = node.exec(f"{name}.shop", ["iptables-save", "-t", "nat"], user=0)
        assert "--to-ports 15001" in out.stdout  # the in-pod rules
        pids = subprocess.run(["ip", "netns", "pids", pod["netns"]], capture_output=True,
                              text=True, check=True).stdout.split()
        assert pids
        for pid in pids:  # the app: no capability at all (NET_ADMIN included)
            status = Path(f"/proc/{pid}/status").read_text()
            effective = next(line for line in status.splitlines() if line.startswith("CapEff"))
            assert int(effective.split()[1], 16) == 0, (name, pid, effective)


def bridge_ports() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "master", BRIDGE], capture_output=True,
                         text=True, check=True).stdout
    return [line.split(": ")[1].split("@")[0] for line in out.splitlines()]


def test_only_tls_to_15008_between_the_pods(node: Node) -> None:
    """A capture on every port of the node's bridge while the client calls: HBONE's TLS to
    15008, and not a byte to the app's port in the clear. (The bridge device itself sees
    only what is for the node: pod-to-pod frames cross its ports.)"""
    from concurrent.futures import ThreadPoolExecutor

    marker = "/wire-check-ambient"
    ports = bridge_ports()
    with ThreadPoolExecutor(2 * len(ports)) as pool:
        hbone = [pool.submit(capture, port, 15008, 3.0, marker.encode()) for port in ports]
        app = [pool.submit(capture, port, 8080, 3.0, marker.encode()) for port in ports]
        time.sleep(0.5)
        answer = node.curl_json("client.shop", f"http://server.shop:9080{marker}")
        assert answer["service"] == "server"
        on_hbone = [f.result() for f in hbone]
        on_app = [f.result() for f in app]
    assert sum(int(c["tls_records"]) for c in on_hbone) > 0, on_hbone  # type: ignore[call-overload]
    assert not any(c["marker"] for c in on_hbone), on_hbone
    assert all(c["packets"] == 0 for c in on_app), on_app


def wait_for(node: Node, pod: str, url: str, works: bool, timeout: float = 20) -> None:
    def done() -> bool:
        out = node.exec(pod, ["curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}",
                              url])
        return (out.stdout == "200") == works

    wait_until(done, timeout, interval=0.3,
               what=f"{url} from {pod} to {'work' if works else 'be refused'}")


HEADLESS = """\
apiVersion: v1
kind: Service
metadata: {name: server-pods, namespace: shop}
spec:
  clusterIP: None
  selector: {app: server}
  ports: [{name: http, port: 9080, targetPort: 8080}]
"""


def test_dns_capture_sends_what_hosts_lacks_to_ztunnel(node: Node) -> None:
    """With DNS capture on, /etc/hosts still answers first; a name it lacks (a headless
    service, made after the pods) is answered by ztunnel's 15053 in the pod, through the
    pod's resolv.conf and the in-pod rules; a name nobody knows fails at once."""
    server_ip = node.pod("server")["ip"]
    resolv = node.exec("client.shop", ["cat", "/etc/resolv.conf"]).stdout
    assert "nameserver 10.252.0.1" in resolv and "search shop.svc.cluster.local" in resolv
    known = node.exec("client.shop", ["getent", "hosts", "server.shop"])  # from /etc/hosts
    assert known.returncode == 0 and known.stdout.split()[1:] == \
        ["server.shop.svc.cluster.local", "server.shop.svc", "server.shop", "server"]
    assert node.config_dir is not None
    write_file(node.config_dir, "headless.yaml", HEADLESS)
    try:
        def resolved() -> bool:
            out = node.exec("client.shop", ["getent", "hosts", "server-pods"])
            return out.returncode == 0 and out.stdout.split()[0] == server_ip

        wait_until(resolved, 20, interval=0.3, what="server-pods to resolve through ztunnel")
        assert "server-pods" not in node.exec("client.shop", ["cat", "/etc/hosts"]).stdout
        out = node.exec("client.shop", ["getent", "hosts", "server-pods.shop.svc.cluster.local"])
        assert out.stdout.split()[0] == server_ip
        dns = node.ztunnel_dump()["dns"]
        assert dns["statistics"]["answered"] >= 2, dns  # type: ignore[index]
        started = time.monotonic()
        out = node.exec("client.shop", ["getent", "hosts", "nothing.example"])
        assert out.returncode == 2 and time.monotonic() - started < 3.0, out
    finally:
        (node.config_dir / "headless.yaml").unlink()


def test_l4_deny_by_principal(node: Node) -> None:
    server = "http://server.shop:9080/"
    assert node.config_dir is not None
    write_file(node.config_dir, "deny.yaml", """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-client, namespace: shop}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]}]
""")
    try:
        wait_for(node, "client.shop", server, works=False)
        assert "deny-client" in node.log("ztunnel.log")  # refused by ztunnel, by this policy
    finally:
        (node.config_dir / "deny.yaml").unlink()
    wait_for(node, "client.shop", server, works=True)


def test_strict_refuses_a_plain_pod(node: Node) -> None:
    direct = f"http://{node.pod('server')['ip']}:8080/"
    wait_for(node, "outsider.plain", direct, works=True)  # PERMISSIVE: through 15006
    assert node.curl_json("outsider.plain", direct)["peer"] == node.pod("outsider")["ip"]
    assert node.config_dir is not None
    write_file(node.config_dir, "strict.yaml", """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec: {mtls: {mode: STRICT}}
""")
    try:
        wait_for(node, "outsider.plain", direct, works=False)
        assert node.curl_json("client.shop", "http://server.shop:9080/")["service"] == "server"
        # The node's own probes (the kubelet's) still reach the app: SNATed to the probe
        # address by the node's rule, which the in-pod rules let past ztunnel.
        probe = json.loads(http(direct, timeout=5).body)
        assert probe["peer"] == "169.254.7.127", probe
    finally:
        (node.config_dir / "strict.yaml").unlink()
    wait_for(node, "outsider.plain", direct, works=True)


def test_a_pod_labelled_into_ambient_while_running(node: Node) -> None:
    before = node.pod("outsider")
    assert node.config_dir is not None
    labelled = mc.pod("outsider", "plain", {"app": "outsider",
                                            "istio.io/dataplane-mode": "ambient"},
                      mc.serve("outsider"))
    write_file(node.config_dir, "outsider.yaml", labelled)
    try:
        def captured() -> bool:
            dump = node.ztunnel_dump()
            return any(p["name"] == "outsider" for p in dump["pods"].values())  # type: ignore[union-attr]

        wait_until(captured, 20, interval=0.3, what="ztunnel to serve the relabelled pod")
        after = node.pod("outsider")
        assert after["ip"] == before["ip"] and after["netns"] == before["netns"]  # no restart
        # its calls now leave through ztunnel: to the server over HBONE, with its identity
        wait_for(node, "outsider.plain", "http://server.shop:9080/", works=True)
        certificates = {c["identity"] for c in node.ztunnel_dump()["certificates"]}  # type: ignore[index]
        assert "spiffe://cluster.local/ns/plain/sa/outsider" in certificates
    finally:
        write_file(node.config_dir, "outsider.yaml", CONFIG["outsider.yaml"])
    wait_until(lambda: not any(p["name"] == "outsider" for p in  # type: ignore[union-attr]
                               node.ztunnel_dump()["pods"].values()), 20, interval=0.3,
               what="ztunnel to let the pod go")


def test_ztunnel_restarted_new_connections_work_within_2s(node: Node) -> None:
    found = subprocess.run(["pgrep", "-f", f"cli ztunnel .*{node.state_dir}"], capture_output=True,
                           text=True).stdout.split()
    assert len(found) == 1, found
    os.kill(int(found[0]), signal.SIGKILL)
    killed = time.monotonic()

    def works() -> bool:
        out = node.exec("client.shop", ["curl", "-s", "-m", "1", "-o", "/dev/null", "-w",
                                        "%{http_code}", "http://server.shop:9080/"])
        return out.stdout == "200"

    wait_until(works, 10, interval=0.1, what="a new connection after ztunnel's restart")
    took = time.monotonic() - killed
    print(f"new connections work {took:.2f}s after ztunnel was killed")
    assert took < 2.0 + 1.0  # 2 s as the issue asks, plus the curl calls' own time


def test_proxy_status_lists_ztunnel(node: Node) -> None:
    out = subprocess.run([sys.executable, "-m", "pilotfish.cli", "proxy-status",
                          "--discovery-address", node.debug.removeprefix("http://")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split()[:7] == ["NAME", "TYPE", "CDS", "LDS", "EDS", "RDS", "WDS"]
    ztunnel = next(row.split() for row in rows if row.startswith("ztunnel-"))
    assert ztunnel[1] == "ztunnel" and ztunnel[6] == "SYNCED", out.stdout


def test_down_after_up_was_killed_stops_ztunnel_and_the_node_agent(node: Node) -> None:
    """Last in this module: ``up`` dies without a word; ``pilotfish down`` still stops the
    node's ambient processes (their pids are in the node's state)."""
    def ambient_processes() -> list[str]:
        return subprocess.run(["pgrep", "-f", f"cli (ztunnel|cni-agent) .*{node.state_dir}"],
                              capture_output=True, text=True).stdout.split()

    assert len(ambient_processes()) == 2
    node.kill()
    node.down()
    wait_until(lambda: not ambient_processes(), 15, interval=0.2,
               what="ztunnel and the CNI node agent to be stopped by down")
    # the agent took the node's probe rule and set with it
    assert "ISTIO_POSTRT" not in subprocess.run(["iptables-save", "-t", "nat"],
                                                capture_output=True, text=True).stdout
    assert "istio-inpod-probes" not in subprocess.run(["ipset", "list", "-name"],
                                                      capture_output=True, text=True).stdout
