"""``pilotfish up``: a whole sidecar mesh on one machine.

Every Pod in the config (and every pod of a Deployment, and a router pod per Gateway API
Gateway: `pilotfish.node.workloads`) becomes a network namespace made by a real CNI chain (bridge +
host-local + pilotfish-cni) on an isolated bridge: the pods can reach each other and the
node, nothing else (no default route, no NAT). The node plays the API server and kubelet:
it allocates ClusterIPs, records pod IPs, writes what discovery reads, gives each pod an
``/etc/hosts`` with the service names, and does kube-proxy's job inside each pod. Injected
pods get ``pilotfish agent`` + Envoy as uid/gid 1337; apps run as their own user.

Everything created is recorded in the state directory as it happens, so ``pilotfish down``
can remove it even after ``up`` was killed. When the config changes, pods are reconciled as
a kubelet would: the ones no longer wanted (or changed) are stopped and removed, new ones
created and started. A container that exits marks its pod failed; the node goes on.

With ``--kubeconfig`` the objects come from a cluster's API server instead, and the node
is that cluster's node (`pilotfish.node.kube`).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs
import yaml

from pilotfish.agent.merged_metrics import app_metrics_url
from pilotfish.agent.startup import hold_application
from pilotfish.cni.pod import RUNTIME_KEY, pod_from_runtime_config
from pilotfish.core import meshconfig, push_context
from pilotfish.core.interceptor import (
    InterceptorError,
    InterceptorSettings,
    PodFacts,
    first_capturing,
)
from pilotfish.core.objects import ConfigKey, ConfigObject
from pilotfish.core.plugins import Plugins
from pilotfish.core.security.files import write_atomic
from pilotfish.core.store import ConfigStore
from pilotfish.interceptors.ambient_settings import PROBE_SNAT_V4
from pilotfish.node import cluster, netns, pods, workloads
from pilotfish.node.ambient import AMBIENT_INTERCEPTOR, AmbientNode
from pilotfish.node.children import ChildExited, run_child, stop, wait_http
from pilotfish.node.state import NodeState, PodState, pid_alive

log = logging.getLogger("pilotfish.node")

XDS_PORT = 15010
SECURE_XDS_PORT = 15012
TOKEN_TTL = 7 * 24 * 3600.0  # the node lives for a session; tokens outlive it
AGENT_HEALTH_PORT = 15021
READY_TIMEOUT = 60.0  # how long up waits for every pod before saying what is not ready


@attrs.frozen
class UpOptions:
    config_dir: Path
    state_dir: Path
    mesh_config: Path | None = None
    proxy: str = ""  # the proxy backend; "": the mesh config's proxy (default envoy)
    bridge: str = "pf0"
    subnet: str = "10.250.0.0/24"
    service_cidr: str = cluster.DEFAULT_SERVICE_CIDR
    debug_address: str = "127.0.0.1:15014"
    discovery_restart_delay: float = 2.0
    demo: bool = False  # print the demo's tour
    proxy_concurrency: int | None = None  # workers per sidecar (None: the proxy's default)
    cert_ttl: str = ""  # workload certificate lifetime the sidecars ask for ("" = the agent's)
    kubeconfig: Path | None = None  # the node of this cluster's API server, not of files
    context: str | None = None


@attrs.define
class RunningPod:
    """A pod the node started: the object it was started from, and how to stop it."""

    obj: ConfigObject
    scope: anyio.CancelScope | None = None
    done: anyio.Event = attrs.Factory(anyio.Event)


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def new_store(mesh: meshconfig.MeshConfig) -> ConfigStore:
    """An empty store that validates objects the way discovery does."""
    from pilotfish.validation import make_kinds, make_validator

    plugins = Plugins.from_config(mesh, groups=["xds"])
    return ConfigStore(make_validator(plugins, mesh.discovery.field_validation),
                       make_kinds(plugins))


def load_config(config_dir: Path, mesh: meshconfig.MeshConfig) -> ConfigStore:
    """The user's config, validated the way discovery validates it."""
    from pilotfish.plugins.files_source import config_files, load_file

    store = new_store(mesh)
    for path in config_files(config_dir):
        load_file(store, path, config_dir, mesh.discovery.config_limits)
    return store


def conflist(state: NodeState, mesh_config: Path | None = None) -> dict[str, Any]:
    """The pod network: an isolated bridge, host-local addresses, then Istio's capture by
    the interceptors of the mesh config's profile."""
    capture: dict[str, Any] = {"type": "pilotfish-cni", "capabilities": {"pilotfishPod": True}}
    if mesh_config is not None:
        capture["mesh_config"] = str(mesh_config.resolve())
    return {
        "cniVersion": "1.0.0",
        "name": "pilotfish",
        "plugins": [
            {
                "type": "bridge",
                "bridge": state.bridge,
                # No gateway role: the plugin would turn on IP forwarding on the host. The
                # node gives the bridge its address itself (see ensure_bridge_address).
                "isGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": _ipam(state),
            },
            # A plugin only sees the runtimeConfig keys it declares (as libcni does).
            capture,
        ],
    }


def _ipam(state: NodeState) -> dict[str, Any]:
    """host-local over the subnet, below the load-balancer pool at its top."""
    ipam = {"type": "host-local", "subnet": state.subnet, "gateway": state.gateway_ip,
            "dataDir": str(state.ipam_dir)}
    end = cluster.pod_range_end(state.subnet)
    if end:
        ipam["rangeEnd"] = end
    return ipam


class Node:
    def __init__(self, options: UpOptions) -> None:
        self.options = options
        self.mesh = meshconfig.load(options.mesh_config)
        network = ipaddress.ip_network(options.subnet)
        self.state = NodeState(
            state_dir=options.state_dir, up_pid=os.getpid(), bridge=options.bridge,
            subnet=options.subnet, gateway_ip=str(network.network_address + 1),
            service_cidr=options.service_cidr, debug_address=options.debug_address,
        )
        self.state.xds_address = f"{self.state.gateway_ip}:{XDS_PORT}"
        self.state.secure_xds_address = f"{self.state.gateway_ip}:{SECURE_XDS_PORT}"
        self.store: ConfigStore | None = None
        self.view = workloads.ClusterView((), ())
        self.balanced: dict[tuple[str, str], cluster.LoadBalancerAddress] = {}
        self.runtime: dict[tuple[str, str], cluster.PodRuntime] = {}
        self.running: dict[tuple[str, str], RunningPod] = {}
        # Pods being stopped (drain, CNI DEL) in the background; a pod of the same name
        # starts once its predecessor is gone, as a kubelet's does.
        self.terminating: set[tuple[str, str]] = set()
        self.reconciling = anyio.Lock()
        self.bin = Path(sys.executable).parent
        # What pilotfish-cni will load for every pod: the profile's interceptors, resolved
        # here first so that a bad plugin choice stops `up` before any pod exists.
        plugins = Plugins.from_config(self.mesh, groups=["interceptors"])
        self.interceptors = plugins.interceptors(
            InterceptorSettings(runtime="cni", environ=os.environ))
        # Ambient mode: the CNI node agent and ztunnel run beside the pods, and
        # pilotfish-cni (and the node itself, for pods relabelled while running) finds the
        # agent through its environment.
        self.ambient = AmbientNode(self.state, self.mesh) if any(
            i.name == AMBIENT_INTERCEPTOR for i in self.interceptors) else None
        if self.ambient is not None:
            self.interceptors = plugins.interceptors(InterceptorSettings(
                runtime="cni", environ={**os.environ, **self.ambient.plugin_environment()}))

    def conflist(self) -> dict[str, Any]:
        return conflist(self.state, self.options.mesh_config)

    def cni_inputs(self, obj: ConfigObject, sidecar: bool
                   ) -> tuple[dict[str, Any], dict[str, str] | None, PodFacts]:
        """What the runtime hands the CNI chain for a pod (its runtime config, and its
        CNI_ARGS: None for those the runtime config implies), and the facts pilotfish-cni
        will read from them. Here the pod's facts are in the runtime config."""
        runtime_config = {RUNTIME_KEY: {
            "name": obj.name, "namespace": obj.namespace,
            "uid": str(obj.metadata.get("uid") or uuid.uuid4()),
            "serviceAccount": str(obj.spec.get("serviceAccountName") or "default"),
            "annotations": dict(obj.annotations), "labels": dict(obj.labels),
            "namespaceLabels": self.namespace_labels().get(obj.namespace, {}),
            "sidecar": sidecar,
            "containerPorts": [p for _, p in pods.container_ports(obj)],
        }}
        return runtime_config, None, pod_from_runtime_config(runtime_config[RUNTIME_KEY])

    def capture_of(self, pod: PodFacts) -> str:
        """Which interceptor pilotfish-cni will hand the pod to, said for the log."""
        try:
            chosen = first_capturing(self.interceptors, pod)
        except InterceptorError as exc:
            raise netns.NodeError(str(exc)) from exc
        if chosen is not None:
            return f"captured by {chosen.name}"
        if not pod.sidecar:
            return ""
        reasons = "; ".join(f"{i.name}: {i.skip_reason(pod) or 'no plan'}"
                            for i in self.interceptors)
        return f"not captured ({reasons or 'the profile has no interceptor'})"

    # -- cluster view ------------------------------------------------------------------

    def objects(self) -> list[ConfigObject]:
        """The cluster's objects: the user's and what the controllers made of them."""
        return list(self.view.objects)

    def update_view(self) -> workloads.ClusterView:
        assert self.store is not None
        self.view = workloads.cluster_view(self.store.objects())
        return self.view

    def namespace_labels(self) -> dict[str, dict[str, str]]:
        assert self.store is not None
        return {o.name: dict(o.labels) for o in self.store.objects("Namespace")}

    def write_cluster(self) -> push_context.PushContext:
        """Write what discovery reads; return the same view as a push context."""
        self.balanced = cluster.load_balancers(self.objects(), self.runtime, self.state.subnet)
        bodies = cluster.cluster_objects(self.objects(), self.runtime, self.state.service_cidr,
                                         self.balanced)
        if self.ambient is not None:
            bodies.append(self.ambient.ztunnel_pod())
        self.publish(bodies)
        from pilotfish.core.yamlload import load_text

        objects, _ = load_text(yaml.safe_dump_all(bodies), "cluster.yaml")
        return push_context.build(objects, self.mesh.mesh, "node")

    def publish(self, bodies: list[dict[str, Any]]) -> None:
        """The cluster's objects where discovery reads them: a file in its config dir."""
        folder = self.state.config_dir
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".cluster.yaml.tmp"
        tmp.write_text(yaml.safe_dump_all(bodies, sort_keys=False))
        tmp.replace(folder / "cluster.yaml")

    async def refresh_pods(self, view: push_context.PushContext) -> None:
        """Names, kube-proxy rules and load-balancer addresses in every pod, for the
        current services."""
        # A copy: pods being terminated in the background leave the state meanwhile.
        for pod in list(self.state.pods.values()):
            if not pod.ip or pod.status == "terminating" or not netns.exists(pod.netns):
                continue
            held = {a.ip for a in self.balanced.values()
                    if a.pod == (pod.namespace, pod.name)}
            await netns.set_extra_addresses(pod.netns, "eth0", pod.ip, held)
            netns.write_name_files(
                pod.netns, cluster.hosts_file(view, pod.name, pod.ip, pod.namespace),
                cluster.resolv_conf(pod.namespace, self.mesh.mesh.domain,
                                    self.state.gateway_ip))
            await netns.apply_nat(pod.netns, cluster.service_nat_rules(view),
                                  cluster.SERVICES_CHAIN)

    # -- pods ----------------------------------------------------------------------------

    async def recapture(self) -> None:
        """Capture that follows labels: a running pod whose labels (or its namespace's) move
        it into ambient mode is handed to the ambient interceptor, one that moves out is
        let go, as Istio's node agent does for pods relabelled while running."""
        ambient = next((i for i in self.interceptors if i.name == AMBIENT_INTERCEPTOR), None)
        if ambient is None:
            return
        namespace_labels = self.namespace_labels()
        for (namespace, name), handle in list(self.running.items()):
            pod = self.state.pods.get(f"{name}.{namespace}")
            given = (pod.cni_runtime if pod is not None else {}).get(RUNTIME_KEY)
            if pod is None or not given or not pod.ip or pod.status in ("failed",
                                                                        "terminating"):
                continue
            now = {**given, "labels": dict(handle.obj.labels),
                   "annotations": dict(handle.obj.annotations),
                   "namespaceLabels": namespace_labels.get(namespace, {})}
            before_facts = pod_from_runtime_config(given, ips=(pod.ip,))
            now_facts = pod_from_runtime_config(now, ips=(pod.ip,))
            was, wanted = ambient.plan(before_facts) is not None, \
                ambient.plan(now_facts) is not None
            if now == given:
                continue
            try:
                if wanted and not was:
                    step(f"pod {namespace}/{name}: into ambient mode")
                    await ambient.apply(now_facts, pod.netns)
                elif was and not wanted:
                    step(f"pod {namespace}/{name}: out of ambient mode")
                    await ambient.remove(before_facts, pod.netns)
            except InterceptorError as exc:
                print(f"    {exc}", flush=True)
                continue
            pod.cni_runtime = {**pod.cni_runtime, RUNTIME_KEY: now}
        self.state.save()

    async def create_network(self, obj: ConfigObject, sidecar: bool) -> PodState:
        from pilotfish.node import cni_runtime

        name = pods.netns_name(obj, self.state.bridge)
        router = pods.router_container(obj)
        pod = PodState(name=obj.name, namespace=obj.namespace, netns=name, container_id=name,
                       sidecar=sidecar, router=router, owner=workloads.owner(obj),
                       app_uid=pods.PROXY_UID if router else pods.DEFAULT_APP_UID)
        self.state.pods[pod.key] = pod
        self.state.save()
        await netns.create(pod.netns)
        runtime_config, cni_args, facts = self.cni_inputs(obj, sidecar)
        pod.cni_runtime = runtime_config
        self.state.save()
        capture = self.capture_of(facts)
        if capture:
            print(f"    {capture}", flush=True)
        result = await cni_runtime.add(
            self.conflist(), netns.netns_path(pod.netns), pod.container_id, "eth0",
            runtime_config=runtime_config, cni_args=cni_args,
            cni_path=[Path("/usr/lib/cni"), self.bin], cache_dir=self.state.cni_cache,
        )
        pod.ip = cni_runtime.first_ipv4(result)
        await self.ensure_bridge_address()
        await netns.add_route(pod.netns, self.state.service_cidr, self.state.gateway_ip)
        # Pods here have no default route; the node's probes of ambient pods come from this
        # address (the CNI node agent's host rule), and their answers must find the way back.
        await netns.add_route(pod.netns, f"{PROBE_SNAT_V4}/32", self.state.gateway_ip)
        for key, value in pods.sysctls(obj):
            await netns.run(["ip", "netns", "exec", pod.netns, "sysctl", "-q", "-w",
                             f"{key}={value}"], what=f"pod {pod.key}: sysctl {key}")
        self.runtime[(obj.namespace, obj.name)] = cluster.PodRuntime(pod.ip, sidecar)
        self.state.save()
        return pod

    async def ensure_bridge_address(self) -> None:
        """The node's own address on the pod network (discovery listens there). Pods reach
        it on-link; with no IP forwarding and no pod default route, nothing goes further."""
        prefix = ipaddress.ip_network(self.state.subnet).prefixlen
        shown = await anyio.run_process(["ip", "link", "show", self.state.bridge], check=False)
        if shown.returncode != 0:  # before the first pod (CNI's bridge plugin takes it as is)
            await netns.run(["ip", "link", "add", self.state.bridge, "type", "bridge"],
                            what=f"bridge {self.state.bridge}: create")
        await netns.run(["ip", "addr", "replace", f"{self.state.gateway_ip}/{prefix}", "dev",
                         self.state.bridge], what=f"bridge {self.state.bridge}: address")
        await netns.run(["ip", "link", "set", self.state.bridge, "up"],
                        what=f"bridge {self.state.bridge}: up")

    def agent_argv(self, obj: ConfigObject, pod: PodState, proxy_type: str = "sidecar"
                   ) -> list[str]:
        extra = pods.hbone_labels(obj) if proxy_type == "sidecar" else {}
        labels = ",".join(f"{k}={v}" for k, v in sorted({**obj.labels, **extra}.items()))
        ports = ",".join(f"{name}:{port}" if name else str(port)
                         for name, port in pods.container_ports(obj))
        argv = [sys.executable, "-m", "pilotfish.cli", "agent", "--type", proxy_type,
                "--proxy", self.options.proxy or self.mesh.proxy, "--name", obj.name,
                "--namespace", obj.namespace, "--ip", pod.ip,
                "--discovery", self.state.secure_xds_address,
                "--token-file", str(self.state.pod_dir(pod) / "token"),
                "--root-cert", str(self.state.pod_dir(pod) / "root-cert.pem"),
                "--service-account", str(obj.spec.get("serviceAccountName") or "default"),
                "--config-dir", str(self.state.proxy_dir(pod))]
        if self.options.proxy_concurrency is not None:
            argv += ["--concurrency", str(self.options.proxy_concurrency)]
        if self.options.cert_ttl:
            argv += ["--cert-ttl", self.options.cert_ttl]
        if proxy_type == "sidecar" and self.interception_mode(obj, pod) == "TPROXY":
            argv += ["--interception-mode", "TPROXY"]
        if labels:
            argv += ["--labels", labels]
        if ports:
            argv += ["--pod-ports", ports]
        if self.options.mesh_config:  # the pod's copy: the agent runs as 1337
            argv += ["--mesh-config", str(self.state.pod_dir(pod) / "pilotfish.yaml")]
        try:
            metrics = app_metrics_url(obj.annotations, pod.ip)
        except ValueError as exc:
            raise netns.NodeError(f"pod {pod.key}: {exc}") from exc
        if metrics:
            argv += ["--app-metrics", metrics]
        return argv

    def wants_sidecar(self, obj: ConfigObject, namespace_labels: dict[str, str]) -> bool:
        return pods.wants_sidecar(obj, namespace_labels)

    @staticmethod
    def unchanged(wanted: ConfigObject, running: ConfigObject) -> bool:
        """Whether a running pod is still what is wanted (else it is replaced)."""
        return wanted.same_content(running)

    async def pod_token(self, obj: ConfigObject) -> str:
        """The pod's service-account token for the istio-ca audience, signed with the
        node's key, which discovery's ``--token-key`` checks."""
        from pilotfish.core.security import tokens

        return tokens.issue(self.state.token_key.read_bytes(), obj.namespace,
                            str(obj.spec.get("serviceAccountName") or "default"), obj.name,
                            ttl=TOKEN_TTL)

    async def credentials(self, obj: ConfigObject, pod: PodState) -> tuple[str, bytes]:
        """The pod's token (`pod_token`) and the mesh root."""
        return await self.pod_token(obj), \
            (self.state.discovery_dir / "root-cert.pem").read_bytes()

    async def ztunnel_token(self) -> str:
        """ztunnel's token: for the pod its DaemonSet would have on this node, which
        discovery knows from the cluster view (`write_cluster`)."""
        assert self.ambient is not None
        body = self.ambient.ztunnel_pod()
        return await self.pod_token(ConfigObject(
            api_version="v1", kind="Pod", name=body["metadata"]["name"],
            namespace=body["metadata"]["namespace"], body=body))

    async def write_pod_files(self, obj: ConfigObject, pod: PodState) -> None:
        """What Kubernetes mounts into every pod: its service-account token (here for the
        istio-ca audience, readable by the user who presents it) and the mesh root."""
        folder = self.state.pod_dir(pod)
        for parent in (folder.parent.parent, folder.parent):
            parent.mkdir(mode=0o755, exist_ok=True)
            parent.chmod(0o755)
        folder.mkdir(mode=0o755, exist_ok=True)
        containers = pods.containers(obj, pod.ip)
        if pod.sidecar:  # the token is the proxy's: its agent presents it
            owner = self.sidecar_user(obj, pod).uid
        elif pod.router:
            owner = pods.PROXY_UID
        else:
            owner = containers[0].uid if containers else pods.DEFAULT_APP_UID
        token, root = await self.credentials(obj, pod)
        path = folder / "token"
        write_atomic(path, token, 0o600)  # 0600 from its first byte
        os.chown(path, owner, owner)
        write_atomic(folder / "root-cert.pem", root, 0o644)
        if self.options.mesh_config:  # readable by the pod's agent, wherever the user's is
            write_atomic(folder / "pilotfish.yaml",
                         Path(self.options.mesh_config).read_bytes(), 0o644)

    # -- pod lifecycle (a kubelet's) -----------------------------------------------------

    async def launch(self, tg: anyio.abc.TaskGroup, obj: ConfigObject) -> None:
        """Start a pod whose network exists, in a task of its own under ``tg`` (returns once
        its containers are started)."""
        handle = RunningPod(obj)
        self.running[(obj.namespace, obj.name)] = handle
        await tg.start(self.run_pod, handle)

    async def run_pod(self, handle: RunningPod, *,
                      task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                      ) -> None:
        obj = handle.obj
        pod = self.state.pods[f"{obj.name}.{obj.namespace}"]
        started = False
        try:
            with anyio.CancelScope() as scope:
                handle.scope = scope
                async with anyio.create_task_group() as children:
                    what = (" sidecar, then app" if pod.sidecar else
                            " router" if pod.router else "")
                    step(f"pod {pod.key}: start{what}")
                    try:
                        await self.start_pod(children, obj, pod, pod.sidecar and
                                             hold_application(self.mesh.mesh, obj.annotations))
                    except Exception as exc:
                        self.pod_failed(pod, f"start: {exc}")
                        children.cancel_scope.cancel()
                    started = True
                    task_status.started()
        finally:
            handle.done.set()
            if not started:
                task_status.started()

    def pod_failed(self, pod: PodState, error: str) -> None:
        """What a kubelet shows as an error state: said once, kept in the state."""
        if pod.status == "failed":
            return
        pod.status, pod.error = "failed", error
        self.state.save()
        print(f"    pod {pod.key}: {error}", flush=True)

    async def run_container(self, pod: PodState, name: str, argv: list[str], *,
                            env: dict[str, str] | None = None, log_path: Path,
                            task_status: anyio.abc.TaskStatus[anyio.abc.Process]
                            = anyio.TASK_STATUS_IGNORED) -> None:
        """One container's process; its exit marks the pod failed (no restarts here)."""
        try:
            await run_child(name, argv, env=env, log_path=log_path, task_status=task_status)
        except ChildExited as exc:
            self.pod_failed(pod, str(exc))

    async def volume_object(self, kind: str, namespace: str, name: str
                            ) -> Mapping[str, Any] | None:
        """The Secret or ConfigMap a volume names (None when there is none)."""
        assert self.store is not None
        found = self.store.get(ConfigKey(kind, namespace, name))
        return found.body if found is not None else None

    async def write_volumes(self, obj: ConfigObject, pod: PodState) -> dict[str, str]:
        """Secret and ConfigMap volumes as files in the pod's folder; volume name →
        folder."""
        out = {}
        for volume, source in pods.secret_volumes(obj).items():
            folder = self.state.pod_dir(pod) / "volumes" / volume
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o755)
            secret = await self.volume_object(source.kind, obj.namespace, source.name)
            if secret is None and not source.optional:
                print(f"    pod {pod.key}: volume {volume}: no {source.kind} "
                      f"{obj.namespace}/{source.name} (the folder stays empty)", flush=True)
            for relative, content in pods.secret_files(secret or {}, source.items).items():
                path = (folder / relative).resolve()
                if not path.is_relative_to(folder.resolve()):
                    continue  # a path out of the volume, which Kubernetes refuses too
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, content, 0o644)
            out[volume] = str(folder)
        return out

    async def start_pod(self, tg: anyio.abc.TaskGroup, obj: ConfigObject, pod: PodState,
                        hold: bool) -> None:
        logs = self.state.logs
        logs.mkdir(parents=True, exist_ok=True)
        await self.write_pod_files(obj, pod)
        if pod.sidecar:
            await self.start_proxy(tg, obj, pod, "sidecar", "istio-proxy")
            if hold:
                step(f"pod {pod.key}: holding the app until the proxy is ready")
                await wait_ready(pod, timeout=60)
        folder = self.state.pod_dir(pod)
        # The pod's own /tmp (a container's is its own too): what apps write there goes
        # with the pod at down.
        scratch = folder / "tmp"
        scratch.mkdir(exist_ok=True)
        scratch.chmod(0o1777)
        node_env = {"PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
                    "PILOTFISH_DISCOVERY": self.state.xds_address,
                    "HOME": str(scratch), "TMPDIR": str(scratch),
                    "PILOTFISH_TOKEN_FILE": str(folder / "token"),
                    "PILOTFISH_ROOT_CERT": str(folder / "root-cert.pem")}
        for container in pods.containers(obj, pod.ip, node_env, python=sys.executable,
                                         volume_dirs=await self.write_volumes(obj, pod)):
            if container.proxy:
                await self.start_proxy(tg, obj, pod, container.proxy, container.name)
                continue
            pod.app_uid = container.uid
            argv = netns.exec_argv(pod.netns, container.argv, container.uid, container.uid)
            await tg.start(partial(
                self.run_container, pod, f"{pod.key}/{container.name}", argv,
                env=dict(container.env), log_path=logs / f"{pod.key}.{container.name}.log"))
        if pod.status != "failed":
            pod.status = "running"
        self.state.save()

    async def start_proxy(self, tg: anyio.abc.TaskGroup, obj: ConfigObject, pod: PodState,
                          proxy_type: str, container: str) -> None:
        """``pilotfish agent`` and its proxy as uid/gid 1337: a sidecar, or a router pod's
        only container (Istio's ``proxy router``), connected to discovery's 15012."""
        proxy_dir = self.state.proxy_dir(pod)
        proxy_dir.mkdir(exist_ok=True)
        user = self.sidecar_user(obj, pod) if proxy_type == "sidecar" else pods.ProxyUser()
        os.chown(proxy_dir, user.uid, user.gid)
        argv = netns.exec_argv(pod.netns, self.agent_argv(obj, pod, proxy_type),
                               user.uid, user.gid, user.caps)
        await tg.start(partial(self.run_container, pod, f"{pod.key}/{container}", argv,
                               log_path=self.state.logs / f"{pod.key}.{container}.log"))

    @staticmethod
    def interception_mode(obj: ConfigObject, pod: PodState) -> str:
        try:
            return pods.interception_mode(obj)
        except ValueError as exc:
            raise netns.NodeError(f"pod {pod.key}: {exc}") from exc

    def sidecar_user(self, obj: ConfigObject, pod: PodState) -> pods.ProxyUser:
        self.interception_mode(obj, pod)  # a bad annotation is named as the pod's
        return pods.sidecar_user(obj)

    async def remove_pod(self, key: tuple[str, str], handle: RunningPod | None = None
                         ) -> None:
        """Stop a pod's processes, then take its network down (a pod deleted)."""
        from pilotfish.node.down import remove_pod

        handle = self.running.pop(key, None) or handle
        if handle is not None:
            if handle.scope is not None:
                handle.scope.cancel()
            await handle.done.wait()
        pod = self.state.pods.get(f"{key[1]}.{key[0]}")
        if pod is None:
            return
        for problem in await remove_pod(self.state, pod):
            print(f"    {problem}", flush=True)
        del self.state.pods[pod.key]
        self.state.save()

    async def terminate(self, tg: anyio.abc.TaskGroup, key: tuple[str, str],
                        handle: RunningPod) -> None:
        """Remove a pod in the background (its proxy's drain takes seconds); once it is gone,
        a replacement of the same name waiting for it is started."""
        try:
            await self.remove_pod(key, handle)
        finally:
            self.terminating.discard(key)
        if key in {(p.namespace, p.name) for p in self.view.pods}:
            await self.reconcile(tg)

    async def reconcile(self, tg: anyio.abc.TaskGroup) -> None:
        """Make the running pods those the config asks for: pods no longer wanted, or whose
        object changed, are removed (their endpoints first, then the rest in the
        background); new ones created and started."""
        async with self.reconciling:
            await self._reconcile(tg)

    async def _reconcile(self, tg: anyio.abc.TaskGroup) -> None:
        desired = {(p.namespace, p.name): p for p in self.update_view().pods}
        # Labels and annotations change on a running pod, as on a cluster; anything else
        # replaces it.
        for key, handle in self.running.items():
            if key in desired and not self.unchanged(desired[key], handle.obj) and \
                    pods.same_but_metadata(desired[key], handle.obj):
                handle.obj = desired[key]
        gone = [key for key, handle in self.running.items()
                if key not in desired or not self.unchanged(desired[key], handle.obj)]
        for key in gone:
            self.runtime.pop(key, None)
        if gone:
            await self.refresh_pods(self.write_cluster())
        for key in gone:
            step(f"pod {key[0]}/{key[1]}: removing")
            pod = self.state.pods.get(f"{key[1]}.{key[0]}")
            if pod is not None:
                pod.status = "terminating"
            handle = self.running.pop(key)
            if handle.scope is not None:
                handle.scope.cancel()
            self.terminating.add(key)
            tg.start_soon(self.terminate, tg, key, handle)
        self.state.save()
        new = [obj for key, obj in desired.items()
               if key not in self.running and key not in self.terminating]
        namespace_labels = self.namespace_labels()
        created = []
        for obj in new:
            sidecar = self.wants_sidecar(obj, namespace_labels.get(obj.namespace, {}))
            step(f"pod {obj.namespace}/{obj.name}: network namespace via CNI"
                 + (" (sidecar)" if sidecar else ""))
            try:
                pod = await self.create_network(obj, sidecar)
            except Exception as exc:
                # Kept as failed (a later change to it retries); its runtime stays unknown,
                # so it has no endpoints.
                broken = self.state.pods.get(f"{obj.name}.{obj.namespace}")
                if broken is not None:
                    self.pod_failed(broken, f"network: {exc}")
                    handle = self.running[(obj.namespace, obj.name)] = RunningPod(obj)
                    handle.done.set()
                continue
            print(f"    {pod.ip}", flush=True)
            created.append(obj)
        await self.refresh_pods(self.write_cluster())
        await self.recapture()
        async with anyio.create_task_group() as starting:
            for obj in created:
                starting.start_soon(self.launch, tg, obj)

    async def wait_all_ready(self, objects: list[ConfigObject],
                             timeout: float = READY_TIMEOUT) -> list[str]:
        """What a user checks before the first request: every sidecar and router ready,
        every app listening on its declared ports, the ingress gateway answering HTTP.
        Returns what is still not so after ``timeout``, or at once for a pod that failed
        (the node stays up either way)."""
        assert self.store is not None
        checks: list[tuple[PodState | None, str, Any]] = []
        for obj in objects:
            pod = self.state.pods.get(f"{obj.name}.{obj.namespace}")
            if pod is None:
                continue
            if pod.sidecar or pod.router:
                checks.append((pod, f"{pod.key}: {'router' if pod.router else 'sidecar'} "
                               "not ready", partial(http_answers, ready_url(pod),
                                                    only_200=True)))
            for _, port in pods.container_ports(obj):
                checks.append((pod, f"{pod.key}: nothing listening on port {port}",
                               partial(listening, pod.netns, port)))
        url = gateway_url(self.state, self.store)
        if url:
            checks.append((None, f"the ingress gateway does not answer at {url}",
                           partial(http_answers, url, only_200=False)))
        problems: set[str] = set()

        async def settle(pod: PodState | None, problem: str, check: Any) -> None:
            deadline = time.monotonic() + timeout
            while not await check():
                if pod is not None and pod.status == "failed":
                    problems.add(f"{pod.key}: failed: {pod.error.splitlines()[0]}")
                    return
                if time.monotonic() > deadline:
                    problems.add(problem)
                    return
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            for pod, problem, check in checks:
                tg.start_soon(settle, pod, problem, check)
        for obj in objects:  # failed without a check to notice it (no ports declared)
            pod = self.state.pods.get(f"{obj.name}.{obj.namespace}")
            if pod is not None and pod.status == "failed":
                problems.add(f"{pod.key}: failed: {pod.error.splitlines()[0]}")
        return sorted(problems)

    # -- discovery ----------------------------------------------------------------------

    def discovery_argv(self) -> list[str]:
        """Discovery reading what the node writes, its CA checking the node's tokens."""
        return [*self.discovery_common_argv(), "--config-dir", str(self.state.config_dir),
                "--token-key", str(self.state.token_key.with_suffix(".pub"))]

    def discovery_common_argv(self) -> list[str]:
        argv = [sys.executable, "-m", "pilotfish.cli", "discovery",
                "--xds-address", self.state.xds_address,
                "--debug-address", self.state.debug_address,
                # 15012 and the CA's root on this node's own address and state: two nodes on
                # one host must not share them.
                "--secure-xds-address", self.state.secure_xds_address,
                "--state-dir", str(self.state.discovery_dir)]
        if self.options.mesh_config:
            argv += ["--mesh-config", str(self.options.mesh_config)]
        return argv

    async def run_discovery(self, *, task_status: anyio.abc.TaskStatus[None]
                            = anyio.TASK_STATUS_IGNORED) -> None:
        """Discovery as a supervised child (a Deployment would restart it too)."""
        argv = self.discovery_argv()
        started = False
        while True:
            with log_file(self.state.logs / "discovery.log") as out:
                process = await anyio.open_process(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True)
            try:
                self.state.discovery_pid = process.pid
                self.state.save()
                if not started:
                    await wait_http(f"http://{self.state.debug_address}/ready", 30,
                                    "discovery to be ready")
                    started = True
                    task_status.started()
                returncode = await process.wait()
            finally:
                with anyio.CancelScope(shield=True):
                    await stop(process)
            print(f"    discovery exited ({returncode}); restarting in "
                  f"{self.options.discovery_restart_delay:.0f}s", flush=True)
            await anyio.sleep(self.options.discovery_restart_delay)

    # -- watching the user's config -------------------------------------------------------

    async def load(self, tg: anyio.abc.TaskGroup) -> None:
        """The user's objects into ``self.store``; ``tg`` holds anything that keeps them
        current."""
        step(f"config from {self.options.config_dir}")
        self.store = load_config(self.options.config_dir, self.mesh)
        for error in self.store.errors():
            print(f"    {error}", flush=True)

    def initial_pods(self) -> list[ConfigObject]:
        """The pods made before discovery starts (discovery then finds them all)."""
        return list(self.update_view().pods)

    async def discovery_started(self, tg: anyio.abc.TaskGroup) -> None:
        """What waits for discovery (nothing here: every pod is already started)."""

    async def watch_config(self, tg: anyio.abc.TaskGroup) -> None:
        """Config changes reach discovery (the cluster view) and the pods (reconciled);
        pods are started under ``tg``."""
        from pilotfish.plugins.files_source import FilesSource, watch

        assert self.store is not None
        source = FilesSource(self.options.config_dir, limits=self.mesh.discovery.config_limits)

        async def apply(paths: set[Path]) -> None:
            assert self.store is not None
            source.apply_changes(self.store, paths)
            for error in self.store.errors():
                print(f"    {error}", flush=True)
            await self.reconcile(tg)

        await watch(self.options.config_dir, apply, debounce_ms=50)


def log_file(path: Path) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


def ready_url(pod: PodState) -> str:
    return f"http://{pod.ip}:{AGENT_HEALTH_PORT}/healthz/ready"


async def wait_ready(pod: PodState, timeout: float) -> None:
    await wait_http(ready_url(pod), timeout, f"the sidecar of {pod.key} to be ready")


async def http_answers(url: str, only_200: bool) -> bool:
    """Whether ``url`` answers HTTP at all (``only_200``: with a 200)."""
    import urllib.error
    import urllib.request

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError:
            return not only_200  # an answer, if not a 200
        except Exception:
            return False

    return await anyio.to_thread.run_sync(probe)


async def listening(netns_name: str, port: int) -> bool:
    """Whether a process in the pod listens on TCP ``port`` (any address)."""
    result = await anyio.run_process(
        ["ip", "netns", "exec", netns_name, "ss", "-Hltn", f"sport = :{port}"], check=False)
    return result.returncode == 0 and bool(result.stdout.strip())


async def check_runnable_as(uid: int) -> None:
    """Pods run pilotfish's interpreter as other users: it must be reachable by them (a
    virtualenv under /root, or a checkout in a 0700 folder, is not)."""
    argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable,
            "-c", "import pilotfish.agent.command"]
    result = await anyio.run_process(argv, check=False)
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise netns.NodeError(
            f"uid {uid} cannot run {sys.executable} with pilotfish ({detail[0]}); use a "
            "virtualenv made from /usr/bin/python3 in a folder other users can read "
            "(./dev setup does that when the checkout is readable)")


async def up(options: UpOptions) -> int:
    from pilotfish.node.down import teardown
    for uid in (pods.DEFAULT_APP_UID, pods.PROXY_UID):
        await check_runnable_as(uid)

    existing = NodeState.load(options.state_dir)
    if existing is not None:
        if pid_alive(existing.up_pid) and existing.up_pid != os.getpid():
            raise netns.NodeError(
                f"a node is already up (pid {existing.up_pid}); run pilotfish down first")
        step("cleaning up what a previous run left behind")
        await teardown(existing)
    node = make_node(options)
    state = node.state
    state.save()
    from pilotfish.core.security import tokens

    private, public = tokens.generate_keypair()
    write_atomic(state.token_key, private, 0o600)
    write_atomic(state.token_key.with_suffix(".pub"), public, 0o644)
    state.cni_conf.write_text(json.dumps(node.conflist(), indent=2))
    try:
        async with anyio.create_task_group() as tg:
            await node.load(tg)
            assert node.store is not None
            namespace_labels = node.namespace_labels()
            pod_objects = node.initial_pods()
            if node.ambient is not None:
                step("CNI node agent (ambient: in-pod rules, ZDS)")
                node.ambient.export_environment()
                await tg.start(node.ambient.run_agent)
            for obj in pod_objects:
                sidecar = node.wants_sidecar(obj, namespace_labels.get(obj.namespace, {}))
                step(f"pod {obj.namespace}/{obj.name}: network namespace via CNI"
                     + (" (sidecar)" if sidecar else ""))
                try:
                    pod = await node.create_network(obj, sidecar)
                except Exception as exc:
                    raise netns.NodeError(f"pod {obj.namespace}/{obj.name}: network: {exc}"
                                          ) from exc
                print(f"    {pod.ip}", flush=True)
            view = node.write_cluster()
            await node.refresh_pods(view)
            await node.ensure_bridge_address()  # also with no pod yet: discovery binds there
            step(f"discovery on {state.xds_address} (debug {state.debug_address})")
            await tg.start(node.run_discovery)
            if node.ambient is not None:
                step("ztunnel (ambient: HBONE, L4 policy)")
                await tg.start(node.ambient.run_ztunnel, await node.ztunnel_token())
            # Every pod at once, as a kubelet starts them; each holds its app for its own
            # sidecar when the mesh config says so.
            async with anyio.create_task_group() as starting:
                for obj in pod_objects:
                    starting.start_soon(node.launch, tg, obj)
            await node.discovery_started(tg)
            tg.start_soon(node.watch_config, tg)
            step("waiting for every pod to be ready" + (
                " and the gateway to answer" if gateway_url(state, node.store) else ""))
            problems = await node.wait_all_ready(list(node.view.pods))
            state.phase, state.problems = ("not-ready", problems) if problems else ("ready", [])
            state.save()
            print(summary(state, node.store, problems), flush=True)
            await wait_stop()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            step("tearing down")
            await teardown(NodeState.load(options.state_dir) or state, keep_up_pid=True)
    return 0


async def wait_stop() -> None:
    import signal

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


def summary(state: NodeState, store: ConfigStore, problems: list[str] | None = None) -> str:
    if problems:
        lines = ["", f"The node is up, but not everything is ready after {READY_TIMEOUT:.0f}s "
                 "(see the logs in " + str(state.logs) + "):",
                 *(f"  {p}" for p in problems), ""]
    else:
        lines = ["", "The node is up (every pod ready):", ""]
    for pod in state.pods.values():
        lines.append(f"  {pod.key:40} {pod.ip:15} {'sidecar' if pod.sidecar else ''}")
    lines += ["", *tour(state, store), "",
              "Also: pilotfish status | pilotfish exec POD -- CMD | pilotfish proxy-status "
              f"--discovery-address {state.debug_address}",
              "Stop with Ctrl-C (or pilotfish down from anywhere).", ""]
    return "\n".join(lines)


def gateway_url(state: NodeState, store: ConfigStore) -> str:
    """The ingress gateway pod's first Gateway server, as a URL ("" when there is none)."""
    gateway = next((p for p in state.pods.values()
                    if p.cni_runtime.get("pilotfishPod", {}).get("labels", {}).get("istio")
                    == "ingressgateway"), None)
    ports = [int((server.get("port") or {}).get("number") or 0)
             for gw in store.objects("Gateway") for server in gw.spec.get("servers") or []]
    if gateway is None or not ports:
        return ""
    return f"http://{gateway.ip}:{ports[0]}"


def tour(state: NodeState, store: ConfigStore) -> list[str]:
    """What to try: requests through the ingress gateway pod, if the config has one."""
    url = gateway_url(state, store)
    if not url:
        return []
    return [
        "Try, through the ingress gateway pod:",
        f"  curl -s {url}/productpage       # productpage calls details and reviews, "
        "sidecar to sidecar",
        f"  for i in $(seq 10); do curl -s {url}/reviews/1 | grep '\"version\"'; done"
        "   # 80/20 split",
        f"  curl -s -H 'end-user: jason' {url}/reviews/1 | grep version   # header match",
        f"  curl -s -o /dev/null -w '%{{http_code}}\\n' -H 'end-user: tester' {url}/ratings/1"
        "   # fault: 503",
        "and from a pod outside the mesh (kube-proxy's job, done by the node):",
        "  pilotfish exec client -- curl -s http://reviews.default:9080/reviews/1",
    ]


def make_node(options: UpOptions) -> Node:
    """The node for the options: reading files, or a cluster's API server."""
    if options.kubeconfig is None:
        return Node(options)
    from pilotfish.node.kube import KubeNode

    return KubeNode(options)


def run_up(options: UpOptions) -> int:
    try:
        return anyio.run(up, options)
    except BaseException as exc:
        problems = _flatten(exc)
        if problems and all(isinstance(p, netns.NodeError | ChildExited) for p in problems):
            for problem in problems:
                print(f"pilotfish up: {problem}", file=sys.stderr)
            return 1
        raise


def _flatten(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _flatten(inner)]
    return [exc]
