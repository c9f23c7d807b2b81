"""Config edits reach a running Envoy without restarts; removals remove; NACKs are shown.

Both ADS flavours: state of the world and delta.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import attrs
import pytest

from pilotfish.testing.mesh import LocalMesh, Proxy
from pilotfish.testing.plugins import write_distribution
from pilotfish.testing.processes import free_port, http, pilotfish, wait_until

pytestmark = pytest.mark.envoy

CLUSTER_A = "outbound|9080||alpha.shop.svc.cluster.local"
CLUSTER_B = "outbound|9080||beta.shop.svc.cluster.local"


def service(name: str, ip: str, port: int) -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 9080, targetPort: {port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}-1, namespace: shop, labels: {{app: {name}}}}}
status: {{podIP: {ip}}}
"""


def routes(target: str, gateway_port: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: shop}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: {gateway_port}, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop, namespace: shop}}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: {target}}}}}]
"""


BREAK_CLUSTERS = '''
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec
from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.xds import types

TRIGGER = "pilotfish.test/break-clusters"


def endpoint(port):
    return ec.LbEndpoint(endpoint=ec.Endpoint(address={
        "socket_address": {"address": "127.0.0.1", "port_value": port}}))


@hookimpl
def pilotfish_patch_resources(type_url, scope, push, resources):
    if type_url != types.CLUSTER:
        return
    if not any(s.labels.get(TRIGGER) == "true" for s in push.services.values()):
        return
    # Envoy accepts the message but refuses the cluster: LOGICAL_DNS takes one endpoint.
    broken = cluster_pb2.Cluster(name="broken-by-test-plugin",
                                 type=cluster_pb2.Cluster.LOGICAL_DNS)
    broken.connect_timeout.seconds = 1
    broken.load_assignment.cluster_name = broken.name
    broken.load_assignment.endpoints.add(lb_endpoints=[endpoint(1), endpoint(2)])
    resources.append(broken)
'''


@attrs.define
class Scenario:
    mesh: LocalMesh
    gateway: Proxy
    url: str
    app_port: int
    gateway_port: int


def start(tmp_path, mode: str, mesh_config: str | None = None, env=None,
          proxy: str = "envoy") -> Scenario:
    mesh = LocalMesh(tmp_path)
    app_port, gateway_port = free_port(), free_port()
    mesh.write("alpha.yaml", service("alpha", "127.0.30.1", app_port))
    mesh.write("beta.yaml", service("beta", "127.0.30.2", app_port))
    mesh.write("routes.yaml", routes("alpha", gateway_port))
    try:
        mesh.start_discovery(mesh_config, extra_env=env)
        mesh.start_apps([f"alpha:v1@127.0.30.1:{app_port}", f"beta:v1@127.0.30.2:{app_port}"])
        gateway = mesh.start_proxy("gw", "shop", labels={"istio": "ingressgateway"},
                                   xds_mode=mode, extra=["--proxy", proxy])
        url = f"http://127.0.0.1:{gateway_port}/"
        wait_until(lambda: http(url).status == 200, 10, what="the gateway to route")
    except BaseException:
        mesh.stop()
        raise
    return Scenario(mesh, gateway, url, app_port, gateway_port)


@pytest.fixture(params=["sotw", "delta"])
def scenario(request, tmp_path) -> Iterator[Scenario]:
    s = start(tmp_path, request.param)
    try:
        yield s
    finally:
        s.mesh.stop()


def cluster_names(proxy: Proxy) -> set[str]:
    dump = proxy.config_dump()
    names = set()
    for section in dump["configs"]:
        for entry in section.get("dynamic_active_clusters", []):
            names.add(entry["cluster"]["name"])
    return names


def test_edit_takes_effect_within_a_second_without_restart(scenario):
    before = http(f"{scenario.gateway.admin}/server_info").json()
    assert http(scenario.url).json()["service"] == "alpha"
    written = time.monotonic()
    scenario.mesh.write("routes.yaml", routes("beta", scenario.gateway_port))
    wait_until(lambda: http(scenario.url).json()["service"] == "beta", 1.0,
               interval=0.01, what="the edit to reach Envoy")
    elapsed = time.monotonic() - written
    after = http(f"{scenario.gateway.admin}/server_info").json()
    assert after["command_line_options"]["restart_epoch"] == before[
        "command_line_options"]["restart_epoch"]
    assert int(after["uptime_all_epochs"].rstrip("s")) >= int(
        before["uptime_all_epochs"].rstrip("s"))
    assert scenario.gateway.process.running
    print(f"edit → new behaviour in {elapsed * 1000:.0f} ms")


def test_deleting_a_service_removes_its_cluster(scenario):
    wait_until(lambda: {CLUSTER_A, CLUSTER_B} <= cluster_names(scenario.gateway), 5,
               what="both clusters")
    scenario.mesh.remove("beta.yaml")
    wait_until(lambda: CLUSTER_B not in cluster_names(scenario.gateway), 2,
               what="beta's cluster to be removed")
    assert CLUSTER_A in cluster_names(scenario.gateway)
    assert http(scenario.url).json()["service"] == "alpha"


def test_broken_edit_keeps_last_good_config(scenario):
    scenario.mesh.write("routes.yaml", "apiVersion: networking.istio.io/v1\nkind: [broken\n")
    time.sleep(0.5)
    assert http(scenario.url).json()["service"] == "alpha"
    errors = http(f"{scenario.mesh.debug}/debug/config_errors").json()
    assert any("routes.yaml" in e["file"] and "invalid YAML" in e["message"] for e in errors)


def test_proxy_status_and_proxy_config_commands(scenario):
    debug = f"127.0.0.1:{scenario.mesh.debug_port}"
    scenario.mesh.wait_synced("gw.shop")
    table = subprocess.run(pilotfish("proxy-status", "--discovery-address", debug),
                           capture_output=True, text=True, check=True).stdout
    header, row = table.splitlines()[:2]
    assert header.split()[:6] == ["NAME", "TYPE", "CDS", "LDS", "EDS", "RDS"]
    assert row.startswith("gw.shop") and row.count("SYNCED") == 4
    data = json.loads(subprocess.run(
        pilotfish("proxy-status", "--discovery-address", debug, "-o", "json"),
        capture_output=True, text=True, check=True).stdout)
    assert data[0]["proxy"] == "gw.shop"

    def config(kind: str, *extra: str) -> str:
        return subprocess.run(
            pilotfish("proxy-config", kind, "gw.shop", "--discovery-address", debug, *extra),
            capture_output=True, text=True, check=True).stdout

    clusters = config("clusters")
    assert "alpha.shop.svc.cluster.local  9080" in clusters
    assert "OUTBOUND" in clusters and "EDS" in clusters
    listeners = config("listeners")
    assert f"0.0.0.0    {scenario.gateway_port}" in listeners or \
        f"0.0.0.0  {scenario.gateway_port}" in listeners
    assert f"Route: http.{scenario.gateway_port}" in listeners
    routes_table = config("routes")
    assert f"http.{scenario.gateway_port}" in routes_table and "shop.shop" in routes_table
    endpoints = config("endpoints")
    assert f"127.0.30.1:{scenario.app_port}" in endpoints and "HEALTHY" in endpoints
    dump = json.loads(config("all", "-o", "json"))
    assert any(c["@type"].endswith("ClustersConfigDump") for c in dump["configs"])


@pytest.mark.parametrize("proxy", ["envoy", "native"])
def test_proxy_config_narrows_shows_the_bootstrap_and_sets_log_levels(tmp_path, proxy):
    s = start(tmp_path, "delta", proxy=proxy)
    try:
        debug = f"127.0.0.1:{s.mesh.debug_port}"
        s.mesh.wait_synced("gw.shop")

        def config(kind: str, *extra: str, check: bool = True
                   ) -> subprocess.CompletedProcess[str]:
            return subprocess.run(pilotfish("proxy-config", kind, "gw.shop",
                                            "--discovery-address", debug, *extra),
                                  capture_output=True, text=True, check=check)

        wait_until(lambda: "beta" in config("clusters").stdout, 5, what="both clusters")
        narrowed = config("clusters", "--fqdn", "alpha", "-o", "json").stdout
        assert [c["name"] for c in json.loads(narrowed)] == [CLUSTER_A]
        table = config("clusters", "--direction", "outbound", "--port", "9080").stdout
        assert "alpha.shop" in table and "beta.shop" in table
        assert "alpha" not in config("clusters", "--port", "1").stdout
        listeners = json.loads(config("listeners", "--port", str(s.gateway_port), "--type",
                                      "HTTP", "-o", "json").stdout)
        assert len(listeners) == 1
        assert json.loads(config("listeners", "--type", "TCP", "-o", "json").stdout) == []
        routes_json = json.loads(config("routes", "--name", f"http.{s.gateway_port}", "-o",
                                        "json").stdout)
        assert [r["name"] for r in routes_json] == [f"http.{s.gateway_port}"]
        endpoints = config("endpoints", "--cluster", "beta").stdout
        assert "127.0.30.2" in endpoints and "127.0.30.1" not in endpoints

        # the bootstrap the agent wrote, which the proxy started from
        bootstrap = json.loads(config("bootstrap").stdout)
        assert bootstrap["node"]["id"].endswith("gw.shop~shop.svc.cluster.local")
        assert "dynamic_resources" in bootstrap

        # log levels: shown, set for every logger, then the answer says so
        assert "active loggers" in config("log").stdout
        assert "debug" in config("log", "--level", "debug").stdout
        assert "debug" not in config("log", "--level", "warning").stdout
        if proxy == "native":  # one logger: a name it does not have is refused by name
            refused = config("log", "--level", "http:debug", check=False)
            assert refused.returncode != 0 and "'http'" in refused.stderr
        else:
            assert "http: debug" in config("log", "--level", "http:debug").stdout
    finally:
        s.mesh.stop()


@pytest.mark.parametrize("mode", ["sotw", "delta"])
def test_rejected_resource_shows_as_error_and_the_rest_is_served(tmp_path, mode):
    plugin_dir = write_distribution(
        tmp_path / "plugins", "pilotfish-test-break-clusters",
        {"break_clusters": BREAK_CLUSTERS},
        {"pilotfish.xds": {"break-clusters": "break_clusters"}},
    )
    s = start(tmp_path / "mesh", mode,
              mesh_config="plugins: {xds: {add: [break-clusters]}}\n",
              env={"PYTHONPATH": str(plugin_dir)})
    debug = f"127.0.0.1:{s.mesh.debug_port}"

    def status() -> str:
        return subprocess.run(pilotfish("proxy-status", "--discovery-address", debug),
                              capture_output=True, text=True, check=True).stdout

    try:
        s.mesh.wait_synced("gw.shop")
        # A labelled service makes the test plugin add a cluster Envoy refuses.
        s.mesh.write("beta.yaml", service("beta", "127.0.30.2", s.app_port).replace(
            "namespace: shop}", "namespace: shop, labels: {pilotfish.test/break-clusters: "
            '"true"}}', 1))
        table = wait_until(lambda: (out := status()) and "ERROR" in out and out, 5,
                           what="CDS to show ERROR")
        assert "broken-by-test-plugin" in table  # Envoy's own message names the cluster
        assert "LOGICAL_DNS" in table
        # The proxy keeps serving, and later changes of other types still reach it.
        assert http(s.url).json()["service"] == "alpha"
        s.mesh.write("routes.yaml", routes("beta", s.gateway_port))
        wait_until(lambda: http(s.url).json()["service"] == "beta", 3, what="the edit")
        # Fixing the config clears the error.
        s.mesh.write("beta.yaml", service("beta", "127.0.30.2", s.app_port))
        s.mesh.wait_synced("gw.shop", timeout=5)
        assert "ERROR" not in status()
    finally:
        s.mesh.stop()


def test_contrib_plugin_installed_changes_what_envoy_serves(tmp_path):
    project = __import__("pathlib").Path(__file__).resolve().parents[2] / "contrib" / (
        "pilotfish-response-headers")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(project)], check=True)
    s = start(tmp_path / "mesh", "delta",
              mesh_config="plugins: {xds: {add: [response-headers]}}\n",
              env={"PYTHONPATH": str(target)})
    try:
        result = http(s.url)
        assert result.status == 200
        assert result.headers["x-mesh"] == "pilotfish"
        plugins_out = subprocess.run(
            pilotfish("plugins", "--mesh-config", str(s.mesh.workdir / "pilotfish.yaml")),
            capture_output=True, text=True, check=True, env={
                **__import__("os").environ, "PYTHONPATH": str(target)},
        ).stdout
        assert "response-headers" in plugins_out
        assert "pilotfish-response-headers 0.1.0" in plugins_out
    finally:
        s.mesh.stop()
