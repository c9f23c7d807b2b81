"""A local node (``pilotfish up``: pods in network namespaces, Istio's iptables capture)
holding a client pod and a server pod with sidecars, for the sidecar-pair benchmarks.

Namespace ``mesh`` is injected: ``client`` runs nothing but a pause (``sleep``) and is
where wrk runs (``pilotfish exec``), so its requests are captured by iptables into its
sidecar; ``server`` runs the backend (Envoy answering 1 KiB directly, ``--concurrency 1``)
on 8080, behind its sidecar. Two Services select the server: ``backend`` (auto mTLS
between the sidecars, Istio's default) and ``backend-plain`` (a DestinationRule turns TLS
off: plaintext between the same sidecars, accepted by the server's PERMISSIVE inbound).
With ``direct``, namespace ``plain`` holds the same two pods without sidecars. With
``ambient``, the node runs Istio's ambient profile beside the sidecar one (ztunnel, a child
of ``pilotfish up``) and namespace ``ambient`` (``istio.io/dataplane-mode: ambient``) holds
the same two pods and Service ``backend``, served by ztunnel instead of sidecars.

Pinning: every process of the sidecars (uid 1337: agent and proxy) and ztunnel to CPU 1;
everything else in the pods (the backend, and wrk when started with ``wrk_runs``) to CPU 0.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import process_use
import wrk_runs

from pilotfish.plugins.envoy.backend import envoy_binary
from pilotfish.testing.node import Node
from pilotfish.testing.processes import wait_until

BACKEND_PORT = 8080
BODY = "x" * 1024
PROXY_UID = 1337
URLS = {"plaintext": "http://backend-plain.mesh/", "mtls": "http://backend.mesh/"}
AMBIENT_URL = "http://backend.ambient/"
AMBIENT_CLIENT = "ambient/client"


def backend_command() -> list[str]:
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network."
                    "http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": "backend", "route_config": {"virtual_hosts": [{
               "name": "all", "domains": ["*"], "routes": [{
                   "match": {"prefix": "/"},
                   "direct_response": {"status": 200, "body": {"inline_string": BODY}}}]}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    config = {"static_resources": {"listeners": [{
        "name": "backend", "address": {"socket_address": {
            "address": "0.0.0.0", "port_value": BACKEND_PORT}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": hcm}]}]}]}}
    return [str(envoy_binary()), "--config-yaml", json.dumps(config), "--concurrency", "1",
            "--disable-hot-restart", "-l", "error"]


def _pod(name: str, namespace: str, command: Sequence[str], app: str) -> str:
    ports = f"\n    ports: [{{containerPort: {BACKEND_PORT}}}]" if app == "backend" else ""
    return f"""\
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {{app: {app}}}}}
spec:
  containers:
  - name: main
    command: {json.dumps(list(command))}{ports}
"""


def config(folder: Path, *, direct: bool, route_header: str = "",
           ambient: bool = False) -> None:
    """The node's config; ``route_header`` adds a VirtualService for ``backend`` that sets
    ``x-push`` on every answer to it (the soak rewrites it)."""
    docs = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: mesh, labels: "
            "{istio-injection: enabled}}\n"]
    namespaces = ["mesh", "plain"] if direct else ["mesh"]
    if direct:
        docs.append("apiVersion: v1\nkind: Namespace\nmetadata: {name: plain}\n")
    if ambient:
        namespaces.append("ambient")
        docs.append("apiVersion: v1\nkind: Namespace\nmetadata: {name: ambient, labels: "
                    "{istio.io/dataplane-mode: ambient}}\n")
    for namespace in namespaces:
        # ambient has no DestinationRule turning TLS off: ztunnel's HBONE is the only path
        for service in ("backend",) if namespace == "ambient" else ("backend", "backend-plain"):
            docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: {service}, "
                        f"namespace: {namespace}}}\nspec:\n  selector: {{app: backend}}\n"
                        f"  ports: [{{name: http, port: 80, targetPort: {BACKEND_PORT}}}]\n")
        docs.append(_pod("server", namespace, backend_command(), "backend"))
        docs.append(_pod("client", namespace, ["sleep", "infinity"], "client"))
    docs.append("""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend-plain, namespace: mesh}
spec:
  host: backend-plain.mesh.svc.cluster.local
  trafficPolicy: {tls: {mode: DISABLE}}
""")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pairs.yaml").write_text("---\n".join(docs))
    if route_header:
        set_route_header(folder, route_header)


def set_route_header(folder: Path, header: str) -> None:
    """Write the VirtualService with ``header``, atomically, in a file of its own."""
    path = folder / "route.yaml"
    tmp = path.with_name(".route.yaml.tmp")
    tmp.write_text(f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: backend, namespace: mesh}}
spec:
  hosts: [backend.mesh.svc.cluster.local]
  http:
  - route: [{{destination: {{host: backend.mesh.svc.cluster.local}}}}]
    headers: {{response: {{set: {{x-push: "{header}"}}}}}}
""")
    os.replace(tmp, path)


def start(workdir: Path, proxy: str, subnet: str, bridge: str, *, direct: bool = False,
          route_header: str = "", ambient: bool = False) -> Node:
    """A node whose sidecars run ``proxy`` with ``--concurrency 1``, pinned, answering;
    with ``ambient``, ztunnel too (the mesh config's ``profile: [sidecar, ambient]``)."""
    config(workdir / "config", direct=direct, route_header=route_header, ambient=ambient)
    extra: tuple[str, ...] = ("--proxy", proxy, "--proxy-concurrency", "1")
    if ambient:
        extra += ("--mesh-config", str(readable_mesh_config("profile: [sidecar, ambient]\n")))
    node = Node(workdir, workdir / "config", subnet, bridge, extra_args=extra)
    try:
        node.start()
        for url in URLS.values():
            wait_until(lambda u=url: status(node, "mesh/client", u) == "200", 30,
                       what=f"{url} through the {proxy} sidecars")
        if ambient:
            wait_until(lambda: status(node, AMBIENT_CLIENT, AMBIENT_URL) == "200", 30,
                       what=f"{AMBIENT_URL} through ztunnel")
        pin(node)
    except BaseException:  # a node half up is still torn down
        stop(node)
        raise
    return node


def readable_mesh_config(text: str) -> Path:
    """The mesh config in a folder of its own that the sidecars' agents (uid 1337, given
    the same ``--mesh-config`` path by the node) can read: pytest's tmp_path is root's
    alone. ``stop`` removes it."""
    folder = Path(tempfile.mkdtemp(prefix="pilotfish-bench-mesh-"))
    folder.chmod(0o755)
    path = folder / "pilotfish.yaml"
    path.write_text(text)
    path.chmod(0o644)
    return path


def ztunnel(node: Node) -> int:
    """The pid of the node's ztunnel (a child of ``pilotfish up``, started again if it
    exits: ask again after a restart)."""
    found = subprocess.run(["pgrep", "-f", f"cli ztunnel .*{node.state_dir}"],
                           capture_output=True, text=True).stdout.split()
    assert len(found) == 1, f"one ztunnel expected for {node.state_dir}, found {found}"
    return int(found[0])


def status(node: Node, pod: str, url: str) -> str:
    out = node.exec(pod, ["curl", "-s", "-o", "/dev/null", "-m", "5", "-w", "%{http_code}",
                          url])
    return out.stdout.strip()


def answer_headers(node: Node, pod: str, url: str) -> dict[str, str]:
    """One request with curl in ``pod``: the status line as ``:status``, and the headers."""
    out = node.exec(pod, ["curl", "-s", "-o", "/dev/null", "-m", "5", "-D", "-", url])
    lines = out.stdout.splitlines()
    found = {":status": lines[0].split()[1] if lines and len(lines[0].split()) > 1 else ""}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            found[name.strip().lower()] = value.strip()
    return found


def pod_pids(node: Node, namespace: str, name: str) -> list[int]:
    pod = next(p for p in node.status()["pods"]
               if p["name"] == name and p["namespace"] == namespace)
    out = subprocess.run(["ip", "netns", "pids", pod["netns"]], capture_output=True,
                         text=True).stdout.split()
    return [int(pid) for pid in out]


def sidecars(node: Node) -> dict[str, list[int]]:
    """The pair's processes (agent and proxy of each), by pod: ``client``, ``server``."""
    return {name: [p for p in pod_pids(node, "mesh", name) if process_use.uid(p) == PROXY_UID]
            for name in ("client", "server")}


def pin(node: Node) -> None:
    for pod in node.status()["pods"]:
        pids = pod_pids(node, pod["namespace"], pod["name"])
        process_use.pin([p for p in pids if process_use.uid(p) == PROXY_UID], "1")
        process_use.pin([p for p in pids if process_use.uid(p) != PROXY_UID], "0")
    if any(p["namespace"] == "ambient" for p in node.status()["pods"]):
        process_use.pin([ztunnel(node)], "1")


def usage(pair: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each process of the pair, as ``client/envoy`` and so on."""
    return {f"{pod}/{process_use.command(pid)}": process_use.cpu_seconds([pid])
            for pod, pids in pair.items() for pid in pids}


def rss(pair: dict[str, list[int]]) -> dict[str, float]:
    return {f"{pod}/{process_use.command(pid)}": process_use.rss_mib([pid])
            for pod, pids in pair.items() for pid in pids}


def wrk(node: Node, url: str, seconds: float, rate: int = 0,
        pod: str = "mesh/client") -> dict[str, Any]:
    """wrk inside ``pod`` (so through its sidecar when it has one), pinned to CPU 0."""
    return wrk_runs.run(url, seconds, rate,
                        runner=lambda argv, timeout: node.exec(pod, argv, timeout=timeout))


def stop(node: Node) -> None:
    node.stop()
    node.down()
    if "--mesh-config" in node.extra_args:
        mesh = Path(node.extra_args[node.extra_args.index("--mesh-config") + 1])
        if mesh.parent.name.startswith("pilotfish-bench-mesh-"):
            shutil.rmtree(mesh.parent, ignore_errors=True)
