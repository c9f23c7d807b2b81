"""Proxyless gRPC: gRPC's own xDS client served by discovery with the ``grpc`` profile.

Real processes throughout: discovery with ``profile: [sidecar, grpc]``, gRPC servers, and a
client (``pilotfish.testing.grpc_apps call``) that dials ``xds:///`` targets through grpcio's
xDS resolver with a bootstrap naming ``GENERATOR: grpc``. No proxy runs: the client itself
resolves the service, routes each call and picks the endpoint.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import Process, wait_until

PORT, TARGET_PORT = 7070, 17070
TARGET = f"xds:///echo.grpc.svc.cluster.local:{PORT}"
SERVERS = {"v1": "127.0.41.1", "v2": "127.0.41.2", "v3": "127.0.41.3"}

SERVICE = f"""\
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: grpc}}
spec:
  selector: {{app: echo}}
  ports: [{{name: grpc, port: {PORT}, targetPort: {TARGET_PORT}}}]
"""


def pod(version: str) -> str:
    return f"""\
apiVersion: v1
kind: Pod
metadata: {{name: echo-{version}, namespace: grpc, labels: {{app: echo, version: {version}}}}}
status: {{podIP: {SERVERS[version]}}}
"""


ROUTING = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: grpc}
spec:
  host: echo.grpc.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: grpc}
spec:
  hosts: [echo.grpc.svc.cluster.local]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: echo.grpc.svc.cluster.local, subset: v2}}]
  - route:
    - {destination: {host: echo.grpc.svc.cluster.local, subset: v1}, weight: 80}
    - {destination: {host: echo.grpc.svc.cluster.local, subset: v2}, weight: 20}
"""


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path) as mesh:
        for name, address in SERVERS.items():
            mesh.processes.append(Process(
                f"grpc-{name}", [sys.executable, "-m", "pilotfish.testing.grpc_apps", "serve",
                                 "--listen", f"{address}:{TARGET_PORT}", "--name", name],
                tmp_path / f"grpc-{name}.log").start())
        yield mesh


def start(mesh: LocalMesh, *config: str) -> None:
    mesh.write("echo.yaml", "---\n".join(config))
    mesh.start_discovery("profile: [sidecar, grpc]\n")


def call(mesh: LocalMesh, count: int, *headers: str) -> list[str]:
    argv = [sys.executable, "-m", "pilotfish.testing.grpc_apps", "call", "--target", TARGET,
            "--discovery", f"127.0.0.1:{mesh.xds_port}", "--count", str(count)]
    for header in headers:
        argv += ["--header", header]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "health: SERVING", done.stdout + done.stderr
    return lines[1:]


def test_a_proxyless_client_resolves_a_service_through_discovery_and_calls_it(mesh):
    start(mesh, SERVICE, pod("v1"))
    assert call(mesh, 3) == ["v1", "v1", "v1"]


def test_header_match_and_an_80_20_split_steer_the_calls(mesh):
    start(mesh, SERVICE, pod("v1"), pod("v2"), ROUTING)
    assert set(call(mesh, 20, "end-user=jason")) == {"v2"}
    answers = Counter(call(mesh, 400))
    assert set(answers) == {"v1", "v2"}, answers
    share = answers["v1"] / 400
    assert 0.72 <= share <= 0.88, answers  # 80 % ± 4 standard deviations of 400 draws


def test_an_endpoint_change_reaches_a_running_client_without_restart(mesh, tmp_path: Path):
    start(mesh, SERVICE, pod("v1"))
    argv = [sys.executable, "-m", "pilotfish.testing.grpc_apps", "call", "--target", TARGET,
            "--discovery", f"127.0.0.1:{mesh.xds_port}", "--count", "3000",
            "--interval", "0.01"]
    client = Process("client", argv, tmp_path / "client.log").start()
    mesh.processes.append(client)
    log = tmp_path / "client.log"
    wait_until(lambda: "\nv1" in log.read_text(), 30, what="the client's first answers")

    # While the client runs, it shows in proxy-status as a proxy of kind grpc.
    def listed() -> dict | None:
        return next((i for i in mesh.syncz() if i["proxy"] == "client.grpc"), None)

    item = wait_until(listed, 10, what="the client in /debug/syncz")
    assert item["proxy_type"] == "grpc"
    assert item["xds_mode"] == "sotw"

    # The pod moves to a new address (v3's server): the client follows, no restart.
    mesh.write("echo.yaml", "---\n".join([SERVICE, pod("v1").replace(SERVERS["v1"],
                                                                      SERVERS["v3"])]))
    wait_until(lambda: log.read_text().rstrip().endswith("v3"), 15,
               what="answers from the new endpoint")
    tail = log.read_text().split("\nv3", 1)[1].splitlines()
    assert "v1" not in tail[5:], "the old endpoint kept answering after the change"
    assert client.running
