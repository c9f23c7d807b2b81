"""The local node end to end, as root: real CNI, real iptables, real Envoy sidecars.

One node for the module (``pilotfish up`` on its own bridge and subnet). The last checks
stop it and prove nothing is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import mesh_config
import pytest

from pilotfish.testing.node import Node, leftovers
from pilotfish.testing.processes import pilotfish, wait_until

pytestmark = [pytest.mark.envoy, pytest.mark.e2e]


SUBNET = "10.251.0.0/24"


def write_config(folder: Path, route_mark: str = "first") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in mesh_config.documents(route_mark).items():
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(folder / name)


SUBNETS = {"envoy": (SUBNET, "pft0"), "native": ("10.251.1.0/24", "pft1")}


@pytest.fixture(scope="module", params=["envoy", "native"])
def node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Node]:
    assert os.geteuid() == 0, "the e2e tests run as root (CI does)"
    workdir = tmp_path_factory.mktemp("node")
    write_config(workdir / "config")
    subnet, bridge = SUBNETS[request.param]
    node = Node(workdir, workdir / "config", subnet, bridge,
                extra_args=("--proxy", request.param))
    try:
        node.start()
        assert node.config_errors() == []
        yield node
    finally:
        netns_names = [p["netns"] for p in node.status()["pods"]]
        node.stop()
        node.down()  # harmless after a clean stop; finishes the job after a failure
        assert leftovers(node, netns_names) == []


def test_pods_get_addresses_and_sidecars(node: Node):
    pods = {p["name"]: p for p in node.status()["pods"]}
    assert pods["client"]["sidecar"] == "ready" and pods["outsider"]["sidecar"] == "-"
    assert all(p["ip"].startswith(node.subnet.rsplit(".", 1)[0] + ".") for p in pods.values())


def test_call_by_service_name_goes_through_both_sidecars(node: Node):
    for name in ("api", "api.mesh", "api.mesh.svc.cluster.local"):
        body = node.curl_json("client", f"http://{name}:9080/hello")
        assert body["service"] == "api"
        # the client's sidecar applied the route (it sets this header) ...
        assert body["headers"].get("x-outbound-sidecar"), body["headers"]
        # ... and the server's sidecar delivered it from 127.0.0.6 (inbound capture)
        assert body["peer"] == "127.0.0.6"


def test_sidecar_to_sidecar_is_mutual_tls(node: Node):
    # auto mTLS: the client's sidecar originates TLS (the server has a sidecar), the
    # server's inbound listener terminates it (Envoy's stat names, on both proxies)
    node.curl_json("client", "http://api:9080/mtls")
    stats = node.exec("api-1", ["curl", "-s", "-m", "5", "127.0.0.1:15000/stats"]).stdout
    handshakes = [line for line in stats.splitlines()
                  if line.startswith("listener.0.0.0.0_15006.ssl.handshake:")]
    assert handshakes and int(handshakes[0].split(":")[1]) > 0, stats[:2000]


def test_call_by_vip(node: Node):
    vip = node.exec("client", ["getent", "hosts", "api"]).stdout.split()[0]
    assert vip.startswith("10.96.")
    body = node.curl_json("client", f"http://{vip}:9080/by-vip")
    assert body["service"] == "api" and body["headers"].get("x-outbound-sidecar")


def test_weighted_split(node: Node):
    code = (
        "import json, urllib.request\n"
        "seen = [json.load(urllib.request.urlopen('http://web:9080/', timeout=5))['version']"
        " for _ in range(200)]\n"
        "print(json.dumps(seen))\n"
    )
    counts = Counter(json.loads(node.python("client", code)))
    assert set(counts) == {"v1", "v2"}
    # 80 % expected; 200 draws: sd about 2.8 %, so +-10 % is > 3.5 sd.
    assert 0.70 <= counts["v1"] / 200 <= 0.90, counts


def test_inbound_capture_from_outside_the_mesh(node: Node):
    api = node.pod("api-1")["ip"]
    body = node.curl_json("outsider", f"http://{api}:8080/direct")
    assert body["peer"] == "127.0.0.6"  # through api's sidecar
    assert "x-outbound-sidecar" not in body["headers"]  # the outsider has none


def test_non_mesh_pods_reach_services_by_vip(node: Node):
    body = node.curl_json("outsider", "http://web.mesh:9080/")
    assert body["service"] == "web"


def test_excluded_ports_stay_reachable_directly(node: Node):
    api = node.pod("api-1")
    outsider = node.pod("outsider")["ip"]
    body = node.curl_json("outsider", f"http://{api['ip']}:9090/excluded")
    assert body["peer"] == outsider  # not through the sidecar
    # the agent's health port is excluded from capture too
    out = node.exec("outsider", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                 f"http://{api['ip']}:15021/healthz/ready"])
    assert out.stdout == "200"


def test_agent_ports_listen_on_the_pod_address_and_loopback_only(node: Node):
    api = node.pod("api-1")["ip"]
    listening = node.exec("api-1", ["ss", "-Hltn"]).stdout.split("\n")
    local = {line.split()[3] for line in listening if line.strip()}
    for port in (15020, 15021):
        assert {a for a in local if a.endswith(f":{port}")} == {
            f"{api}:{port}", f"127.0.0.1:{port}"}, local


def test_proxy_traffic_is_not_captured_again(node: Node):
    # A loop would make every mesh request hang; sending straight to the outbound capture
    # port is refused by the blackhole chain rather than looping.
    started = time.monotonic()
    out = node.exec("client", ["curl", "-s", "-m", "5", "http://127.0.0.1:15001/"])
    assert out.returncode != 0 and time.monotonic() - started < 5
    assert node.curl_json("client", "http://api:9080/after")["service"] == "api"


def test_app_running_as_1337_bypasses_its_sidecar(node: Node):
    body = node.curl_json("rogue", "http://api:9080/gotcha")
    assert body["service"] == "api"
    assert "x-outbound-sidecar" not in body["headers"]  # its own sidecar never saw it
    assert body["peer"] == "127.0.0.6"  # the server's sidecar still did


def test_merged_metrics_have_istio_names_and_the_apps_own(node: Node):
    from pilotfish.testing.processes import http

    api = node.pod("api-1")["ip"]
    node.curl_json("client", "http://api:9080/count-me")

    def merged() -> str | None:
        text = http(f"http://{api}:15020/stats/prometheus").body.decode()
        wanted = ('reporter="destination"', "istio_requests_total", "demo_requests_total")
        return text if all(w in text for w in wanted) else None

    text = wait_until(merged, 15, what="merged metrics")
    assert 'destination_service="api.mesh.svc.cluster.local"' in text


def test_hold_application_until_proxy_starts(node: Node):
    assert "first call: ok 200" in node.log("held.mesh.app.log")
    assert "first call: failed" in node.log("unheld.mesh.app.log")


def test_analyze_finds_apps_listening_on_localhost_only(node: Node):
    import subprocess

    from pilotfish.testing.processes import pilotfish

    out = subprocess.run(pilotfish("analyze", "--config-dir", str(node.config_dir),
                                   "--state-dir", str(node.state_dir), "-o", "json"),
                         capture_output=True, text=True)
    findings = json.loads(out.stdout)
    local = [f for f in findings if f["code"] == "PF0108"]
    assert local and all("local-1" in json.dumps(f) for f in local), findings
    assert out.returncode == 1


def test_discovery_outage_and_return(node: Node):
    pid = node.discovery_pid()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not node.discovery_ready(), 5, what="discovery to be gone")
    for _ in range(5):  # the mesh keeps working on the proxies' last config
        assert node.curl_json("client", "http://api:9080/outage")["service"] == "api"
    wait_until(node.discovery_ready, 30, what="discovery to come back")
    assert node.discovery_pid() != pid
    write_config(node.config_dir, route_mark="second")

    def changed() -> bool:
        body = node.curl_json("client", "http://api:9080/changed")
        return bool(body["headers"].get("x-outbound-sidecar") == "second")

    wait_until(changed, 20, interval=0.5, what="the config change to reach the proxies")


def test_zz_down_after_kill_leaves_nothing(tmp_path: Path):
    """Kill -9 ``up`` mid-flight, then ``pilotfish down``: nothing remains."""
    config = tmp_path / "config"
    config.mkdir()
    docs = mesh_config.documents()
    (config / "all.yaml").write_text("---\n".join([
        docs["namespaces.yaml"], docs["services.yaml"],
        mesh_config.pod("solo", "mesh", {"app": "api"}, mesh_config.serve("api")),
    ]))
    node = Node(tmp_path, config, "10.252.0.0/24", "pft1")
    try:
        node.start()
        names = [p["netns"] for p in node.status()["pods"]]
        assert names
        assert node.status()["phase"] == "ready"
        node.kill()
        assert leftovers(node, names)  # the kill left things behind ...
        # ... and status says so, and what to do
        data = node.status()
        assert data["phase"] == "gone"
        assert {p["status"] for p in data["pods"]} == {"left behind"}
        table = subprocess.run(pilotfish("status", "--state-dir", str(node.state_dir)),
                               capture_output=True, text=True, check=True).stdout
        assert "run pilotfish down" in table.splitlines()[0], table
    finally:
        print(node.down())
    assert leftovers(node, names) == []  # ... and down removed them


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
