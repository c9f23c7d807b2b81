"""What ``pilotfish up`` created, written down as it goes, so ``down`` can undo it all —
also after ``up`` crashed or was killed with SIGKILL."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs

DEFAULT_STATE_DIR = Path("/run/pilotfish/node")
# Per-pod folders live outside the state dir: pod users (1337, the app's) must reach them
# whatever the state dir's parents allow (a test's tmp is 0700). Each holds the pod's token
# and the mesh root (what Kubernetes mounts into pods) and, for a sidecar, ``proxy/``.
POD_DIRS = Path("/run/pilotfish/pods")


@attrs.define
class PodState:
    name: str
    namespace: str
    netns: str
    container_id: str
    ip: str = ""
    sidecar: bool = False
    router: bool = False  # a Gateway's pod: its only container is the proxy
    owner: str = ""  # Deployment/NAME for a Deployment's pod
    app_uid: int = 1001
    health_port: int = 15021
    admin_port: int = 15000
    status: str = "creating"  # creating | running | failed
    error: str = ""
    # What the CNI chain was given for this pod (DEL gets the same, as a runtime does).
    cni_runtime: dict[str, Any] = attrs.field(factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}.{self.namespace}"


@attrs.define
class NodeState:
    state_dir: Path
    up_pid: int = 0
    bridge: str = ""
    subnet: str = ""
    gateway_ip: str = ""
    service_cidr: str = ""
    discovery_pid: int = 0
    xds_address: str = ""
    secure_xds_address: str = ""
    debug_address: str = ""
    ztunnel_admin: str = ""  # ambient mode: ztunnel's admin API (pilotfish ztunnel-config)
    ztunnel_backend: str = ""  # ambient mode: the proxy backend that runs it
    # ambient mode: the CNI node agent's and ztunnel's pids (down stops them after a crash)
    ambient_pids: dict[str, int] = attrs.field(factory=dict)
    # starting → ready (every pod ready, the gateway answering) or not-ready (``problems``
    # says what was not, once up stopped waiting).
    phase: str = "starting"
    problems: list[str] = attrs.field(factory=list)
    pods: dict[str, PodState] = attrs.field(factory=dict)

    @property
    def path(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def config_dir(self) -> Path:
        """What discovery reads: the user's config as the cluster holds it."""
        return self.state_dir / "cluster"

    @property
    def cni_conf(self) -> Path:
        return self.state_dir / "cni.conflist"

    @property
    def cni_cache(self) -> Path:
        return self.state_dir / "cni-cache"

    @property
    def ipam_dir(self) -> Path:
        return self.state_dir / "ipam"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def pod_dir(self, pod: PodState) -> Path:
        return POD_DIRS / pod.netns

    def proxy_dir(self, pod: PodState) -> Path:
        return self.pod_dir(pod) / "proxy"

    @property
    def discovery_dir(self) -> Path:
        """Discovery's own state: the CA root survives discovery restarts."""
        return self.state_dir / "discovery"

    @property
    def token_key(self) -> Path:
        """The node's private key for pod tokens (the public half is next to it)."""
        return self.state_dir / "token-key.pem"

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = attrs.asdict(self, filter=lambda a, _: a.name != "state_dir")
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, state_dir: Path) -> NodeState | None:
        path = state_dir / "state.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        pods = {k: PodState(**v) for k, v in data.pop("pods", {}).items()}
        return cls(state_dir=state_dir, pods=pods, **data)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
