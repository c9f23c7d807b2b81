"""Ambient mode on the local node: the CNI node agent and ztunnel, when the mesh config's
profile activates the ``ztunnel-sockets`` interceptor.

The node runs them as a cluster runs Istio's DaemonSets: ``pilotfish cni-agent`` before the
first pod's network is made (``pilotfish-cni`` posts ambient pods to it; it writes their
in-pod rules and hands their network namespaces to ztunnel over ZDS), and ``pilotfish
ztunnel`` once discovery serves (its certificate and Workload Discovery come from there).
ztunnel is a host-network pod of its own in the cluster view, ``istio-system/ztunnel``, so
that the CA knows it runs on this node when it asks for the certificates of the node's pods.
ztunnel is started through a proxy backend (group ``pilotfish.proxies``), the one the mesh
config's ``ztunnel`` names (default ``ztunnel``, ``pilotfish ztunnel``): the node hands it its
settings (``ProxyOptions`` with ``ZtunnelOptions``), has it write and check them, runs its
command and waits for its admin to say it is ready. Another ztunnel is another backend.
DNS capture is on, as in Istio's chart: a pod's DNS goes to ztunnel's 15053 in the pod,
which answers the mesh's names and forwards the rest to the nameservers of its own
/etc/resolv.conf (from inside the pod). Pods still read /etc/hosts first
(``cluster.hosts_file``): ztunnel answers what is not there (headless services' pods) and
what changed since the node last wrote it.
"""

from __future__ import annotations

import os
import socket
import sys
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from pilotfish.core.meshconfig import GroupChoice, MeshConfig
from pilotfish.core.plugins import PluginError, active_proxy
from pilotfish.core.proxy_backend import (
    ZTUNNEL_TYPE,
    ProxyAdmin,
    ProxyBackend,
    ProxyError,
    ProxyOptions,
    ZtunnelOptions,
)
from pilotfish.core.security.files import write_atomic
from pilotfish.node.children import ChildExited, run_child, wait_ready
from pilotfish.node.netns import NodeError
from pilotfish.node.state import NodeState

ZTUNNEL_NAMESPACE, ZTUNNEL_ACCOUNT = "istio-system", "ztunnel"
AMBIENT_INTERCEPTOR = "ztunnel-sockets"  # the profile's interceptor that makes a node ambient
EVENTS_SOCKET_ENV = "PILOTFISH_CNI_EVENTS_SOCKET"
START_TIMEOUT = 30.0
RESTART_DELAY = 0.5
ADMIN_PORT = 15000


class AmbientNode:
    """Where the node's ambient parts live and how they are started."""

    def __init__(self, state: NodeState, mesh: MeshConfig | None = None) -> None:
        self.state = state
        self.mesh = mesh if mesh is not None else MeshConfig()
        self.folder = state.state_dir / "ambient"
        try:  # before any pod exists: a ztunnel that cannot be found stops `up` early
            self.backend: ProxyBackend = active_proxy(self.mesh, field="ztunnel")
        except PluginError as exc:
            raise NodeError(str(exc)) from None

    @property
    def zds_socket(self) -> Path:
        return self.folder / "ztunnel.sock"

    @property
    def events_socket(self) -> Path:
        return self.folder / "pluginevent.sock"

    @property
    def ztunnel_name(self) -> str:
        return f"ztunnel-{self.state.bridge}"

    @property
    def ztunnel_ip(self) -> str:
        return self.state.gateway_ip

    def plugin_environment(self) -> dict[str, str]:
        """What pilotfish-cni needs to find the agent, in the environment it inherits."""
        return {EVENTS_SOCKET_ENV: str(self.events_socket), "AMBIENT_DNS_CAPTURE": "true",
                "AMBIENT_IPV6": "false"}

    def ztunnel_pod(self) -> dict[str, Any]:
        """ztunnel's own pod, as its DaemonSet would make it (host network)."""
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": self.ztunnel_name, "namespace": ZTUNNEL_NAMESPACE,
                             "labels": {"app": "ztunnel"}},
                "spec": {"serviceAccountName": ZTUNNEL_ACCOUNT, "hostNetwork": True,
                         "containers": [{"name": "istio-proxy", "image": "pilotfish"}]},
                "status": {"phase": "Running", "podIP": self.ztunnel_ip}}

    async def run_agent(self, *, task_status: anyio.abc.TaskStatus[None]
                        = anyio.TASK_STATUS_IGNORED) -> None:
        """``pilotfish cni-agent`` as a child, started once its events socket answers."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.state.logs.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "pilotfish.cli", "cni-agent",
                "--zds-socket", str(self.zds_socket),
                "--events-socket", str(self.events_socket),
                "--state-file", str(self.folder / "cni-agent.json"),
                "--dns-capture", "--no-ipv6"]
        async with anyio.create_task_group() as tg:
            process = await tg.start(partial(run_child, "cni-agent", argv,
                                             log_path=self.state.logs / "cni-agent.log"))
            self.record("cni-agent", process.pid)
            await _wait_for(self.events_socket, "the CNI node agent's events socket")
            task_status.started()

    @property
    def ztunnel_dir(self) -> Path:
        """ztunnel's token and settings (its backend's config dir)."""
        return self.folder / "ztunnel"

    def ztunnel_options(self) -> ProxyOptions:
        """What the node tells the ztunnel backend: Istio's ports, on the node's address
        (admin on loopback), discovery's mTLS port and root, and ztunnel's own token."""
        admin_host, _, admin_port = self.admin_address().rpartition(":")
        return ProxyOptions(
            proxy_type=ZTUNNEL_TYPE, name=self.ztunnel_name, namespace=ZTUNNEL_NAMESPACE,
            ip=self.ztunnel_ip, service_account=ZTUNNEL_ACCOUNT,
            discovery_address=self.state.secure_xds_address, config_dir=self.ztunnel_dir,
            domain=self.mesh.mesh.domain, admin_address=admin_host,
            admin_port=int(admin_port),
            ztunnel=ZtunnelOptions(
                zds_socket=self.zds_socket,
                root_cert=self.state.discovery_dir / "root-cert.pem",
                token_file=self.ztunnel_dir / "token",
                trust_domain=self.mesh.mesh.trust_domain,
                metrics_address=f"{self.ztunnel_ip}:15020",
                readiness_address=f"{self.ztunnel_ip}:15021"))

    def ztunnel_admin(self) -> ProxyAdmin:
        return self.backend.admin(self.ztunnel_options())

    async def run_ztunnel(self, token: str, *, task_status: anyio.abc.TaskStatus[None]
                          = anyio.TASK_STATUS_IGNORED) -> None:
        """ztunnel as a child, with ``token`` (its pod's, from the node), through its
        backend; started once its admin says it is ready."""
        self.ztunnel_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.ztunnel_dir / "token", token, 0o600)
        options = self.ztunnel_options()
        name = self.backend.name
        try:
            # In a thread: a backend may compile what it runs as it writes (ztunnel's
            # bytecode, a second or two), and the node serves its pods meanwhile.
            path = await anyio.to_thread.run_sync(self.backend.write_bootstrap, options)
            self.backend.check(path)
        except (ProxyError, OSError) as exc:
            raise NodeError(f"ztunnel (proxy backend {name}): {exc}") from None
        argv = self.backend.command(options, path)
        if argv is None:
            raise NodeError(f"ztunnel (proxy backend {name}): it gives no command to run")
        admin = self.backend.admin(options)
        self.state.ztunnel_backend = name  # for pilotfish ztunnel-config
        self.state.save()
        started = False
        async with anyio.create_task_group() as beside:
            await beside.start(admin.serve)  # what the backend serves beside its proxy
            while True:  # as its DaemonSet would, a ztunnel that exits is started again
                try:
                    async with anyio.create_task_group() as tg:
                        process = await tg.start(partial(
                            run_child, "ztunnel", argv,
                            log_path=self.state.logs / "ztunnel.log"))
                        self.record("ztunnel", process.pid)
                        if not started:
                            await wait_ready(admin, START_TIMEOUT, "ztunnel to be ready")
                            started = True
                            task_status.started()
                except* ChildExited as exited:
                    codes = [getattr(e, "returncode", "?") for e in exited.exceptions]
                    print(f"    ztunnel exited ({codes[0]}); restarting it "
                          "(logs/ztunnel.log)", flush=True)
                await anyio.sleep(RESTART_DELAY)

    def record(self, name: str, pid: int) -> None:
        """Where ``pilotfish down`` finds it if ``up`` dies without stopping it."""
        self.state.ambient_pids[name] = pid
        self.state.save()

    def admin_address(self) -> str:
        """Istio's 127.0.0.1:15000, unless another node on this host holds it (then a free
        port); recorded in the node's state for ``pilotfish ztunnel-config``."""
        if not self.state.ztunnel_admin:
            port = ADMIN_PORT
            with socket.socket() as probe:
                # as the server will bind it: a port in TIME_WAIT is still free to listen on
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", ADMIN_PORT))
                except OSError:
                    probe.bind(("127.0.0.1", 0))
                    port = probe.getsockname()[1]
            self.state.ztunnel_admin = f"127.0.0.1:{port}"
            self.state.save()
        return self.state.ztunnel_admin

    def export_environment(self) -> None:
        os.environ.update(self.plugin_environment())


def node_ztunnel_admin(state: NodeState) -> ProxyAdmin | None:
    """The admin of the ztunnel ``pilotfish up`` runs on the node whose state this is,
    through the backend that runs it; None when the node runs none."""
    if not state.ztunnel_admin:
        return None
    name = state.ztunnel_backend or "ztunnel"  # a state written before backends recorded
    chosen = MeshConfig(plugins={"proxies": GroupChoice(use=(name,))}, ztunnel=name,
                        source=str(state.path))
    return AmbientNode(state, chosen).ztunnel_admin()


async def _wait_for(path: Path, what: str) -> None:
    with anyio.move_on_after(START_TIMEOUT):
        while not path.exists():
            await anyio.sleep(0.05)
        return
    raise NodeError(f"{what} ({path}) did not appear within {START_TIMEOUT:.0f}s")
