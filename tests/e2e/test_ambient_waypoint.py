"""Ambient mode's L7 on the local node, end to end, as root: a Gateway of class
``istio-waypoint`` gets a waypoint pod (Envoy, proxy kind ``waypoint``) from the node's
gateway controller; a Service labelled ``istio.io/use-waypoint`` has ztunnel send its traffic
there over HBONE, and the waypoint applies the Service's HTTPRoute and the L7
AuthorizationPolicy that targets it, then re-originates HBONE to the pods. Then the same with
``proxy: native`` in the mesh config: the node runs the waypoint on the native proxy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import mesh_config as mc
import pytest

from pilotfish.testing.node import Node, node_with, write_file
from pilotfish.testing.processes import wait_until

pytestmark = [pytest.mark.envoy, pytest.mark.e2e]

SUBNET = "10.251.0.0/24"
BRIDGE = "pfwpt"

WAYPOINT = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop, labels: {istio.io/waypoint-for: service}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"""
ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: server, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: server, port: 9080}]
  rules:
  - matches: [{headers: [{name: x-version, value: v2}]}]
    backendRefs: [{name: server-v2, port: 9080}]
  - backendRefs:
    - {name: server-v1, port: 9080, weight: 80}
    - {name: server-v2, port: 9080, weight: 20}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: server}]
  action: DENY
  rules: [{to: [{operation: {paths: [/admin*]}}]}]
"""


def server(version: str) -> str:
    return mc.pod(f"server-{version}", "shop", {"app": "server", "version": version},
                  mc.serve("server", version)).replace("serviceAccountName: server",
                                                       "serviceAccountName: server")


def services(waypoint: bool) -> str:
    label = "{istio.io/use-waypoint: waypoint}" if waypoint else "{}"
    out = []
    for name, selector in (("server", "{app: server}"),
                           ("server-v1", "{app: server, version: v1}"),
                           ("server-v2", "{app: server, version: v2}")):
        out.append(f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop, labels: {label if name == "server" else "{}"}}}
spec:
  selector: {selector}
  ports: [{{name: http, port: 9080, targetPort: 8080}}]
""")
    return "---\n".join(out)


CONFIG = {
    "namespaces.yaml": """\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
""",
    "client.yaml": mc.pod("client", "shop", {"app": "client"}, mc.serve("client")),
    "servers.yaml": server("v1") + "---\n" + server("v2"),
    "services.yaml": services(waypoint=True),
    "waypoint.yaml": WAYPOINT,
    "route.yaml": ROUTE,
}

COUNT = """
import json, urllib.request, urllib.error, collections
counts = collections.Counter()
for i in range({n}):
    request = urllib.request.Request("http://server.shop:9080{path}", headers={headers})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            counts[json.loads(r.read())["version"]] += 1
    except urllib.error.HTTPError as e:
        counts[str(e.code)] += 1
print(json.dumps(counts))
"""


@pytest.fixture(scope="module", params=["envoy", "native"])
def node(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    assert os.geteuid() == 0, "the e2e tests run as root (CI does)"
    with node_with(tmp_path_factory.mktemp(f"waypoint-{request.param}"), CONFIG, SUBNET,
                   BRIDGE, f"profile: [sidecar, ambient]\nproxy: {request.param}\n") as node:
        yield node


def counts(node: Node, n: int, path: str = "/", headers: dict[str, str] | None = None
           ) -> dict[str, int]:
    out = node.python("client.shop", COUNT.format(n=n, path=path, headers=headers or {}),
                      timeout=120)
    return dict(json.loads(out))


def test_the_node_runs_the_waypoint(node: Node) -> None:
    waypoints = [p for p in node.status()["pods"] if p["owner"] == "Deployment/waypoint"]
    assert len(waypoints) == 1, node.status()["pods"]
    assert waypoints[0]["proxy"] == "router"  # the node's word for a pod that is only a proxy


def test_80_20_split_through_the_waypoint(node: Node) -> None:
    found = counts(node, 200)
    assert set(found) <= {"v1", "v2"} and sum(found.values()) == 200, found
    assert 20 <= found.get("v2", 0) <= 62, found  # 40 expected; 5 standard deviations


def test_header_match_through_the_waypoint(node: Node) -> None:
    assert counts(node, 20, headers={"x-version": "v2"}) == {"v2": 20}


def test_l7_deny_on_a_path(node: Node) -> None:
    assert counts(node, 5, path="/admin/users") == {"403": 5}
    assert set(counts(node, 5, path="/public")) <= {"v1", "v2"}


def test_none_of_it_without_the_waypoint(node: Node) -> None:
    assert node.config_dir is not None
    write_file(node.config_dir, "services.yaml", services(waypoint=False))
    try:
        wait_until(lambda: counts(node, 3, path="/admin/x").keys() <= {"v1", "v2"}, 30,
                   interval=0.5, what="the service to stop using its waypoint")
        assert counts(node, 20, headers={"x-version": "v2"}).keys() == {"v1", "v2"}
    finally:
        write_file(node.config_dir, "services.yaml", services(waypoint=True))
    wait_until(lambda: counts(node, 3, path="/admin/x") == {"403": 3}, 30, interval=0.5,
               what="the service to use its waypoint again")


def test_waypoint_in_ztunnel_config(node: Node) -> None:
    out = subprocess.run([sys.executable, "-m", "pilotfish.cli", "ztunnel-config", "services",
                          "-n", "shop", "--state-dir", str(node.state_dir)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[1]: line.split() for line in out.stdout.splitlines()[1:]}
    assert rows["server"][3] == rows["waypoint"][2], out.stdout  # the waypoint's VIP
    assert rows["server-v1"][3] == "None", out.stdout


def test_proxy_status_lists_the_waypoint_and_ztunnel(node: Node) -> None:
    out = subprocess.run([sys.executable, "-m", "pilotfish.cli", "proxy-status",
                          "--discovery-address", node.debug.removeprefix("http://")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    types = {row.split()[0].split(".")[0]: row.split()[1] for row in out.stdout.splitlines()[1:]}
    assert "waypoint" in [t for name, t in types.items() if name.startswith("waypoint-")], types
    assert "ztunnel" in types.values(), types
