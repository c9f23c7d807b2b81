"""The cluster under test: ``pilotfish up`` on its own bridge, with the suite's base
infrastructure, and the ways the suite looks at it.

``Live.start`` does what ``suite.Setup`` does before the first test (and what istiod's
install does before that): the ``istio`` GatewayClass istiod creates, the base manifests
(and the mesh's, when mesh tests run) as the Applier prepares them, the Secrets and
ConfigMaps the suite makes in code; then the node comes up on them. Reads for the status
checks come from three places: what was written (``APIServer``), the status discovery
computed (``/debug/gateway_status``) and the pods the node runs (its state and, for the
objects its controllers made, the cluster view it hands discovery).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from pilotfish.node.commands import status_data
from pilotfish.node.state import NodeState
from pilotfish.testing.node import Node, leftovers
from pilotfish.testing.processes import http

from . import certificates, manifests
from .apiserver import APIServer, Key, key_of
from .exchanges import decoded
from .model import Ref
from .status import Pod, Snapshot

GATEWAY_GROUP = "gateway.networking.k8s.io"
ECHO_ADVANCED = (sys.executable, "-m", "pilotfish.testing.conformance.istio_echo")
MESH_APPLIER = manifests.Applier(namespace_labels={"istio-injection": "enabled"})
ISTIO_GATEWAY_CLASS = {
    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
    "metadata": {"name": "istio"},
    "spec": {"controllerName": "istio.io/gateway-controller",
             "description": "The default Istio GatewayClass"},
}


def mesh_document(document: dict[str, Any]) -> dict[str, Any]:
    """A mesh manifest's object as the runner applies it: namespaces injected (Istio's run
    labels every namespace; here only the mesh's, so the gateway tests' backends stay
    without sidecars) and the echo-advanced containers given the stand-in as their command,
    with their pod's name (the image reads its hostname)."""
    out = MESH_APPLIER.prepare(document)
    if out.get("kind") == "Deployment":
        spec = out["spec"]["template"]["spec"]
        for container in spec.get("containers") or ():
            if "echo-advanced" in str(container.get("image")) and not container.get("command"):
                container["command"] = list(ECHO_ADVANCED)
                container.setdefault("env", []).append(
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    return out


@attrs.define
class Live:
    workdir: Path
    suite: Path
    applier: manifests.Applier
    subnet: str = "10.240.0.0/24"
    bridge: str = "pfconf0"
    mesh: bool = False
    proxy: str = "envoy"
    api: APIServer = attrs.field(init=False)
    node: Node = attrs.field(init=False)
    _netns: set[str] = attrs.Factory(set)

    def __attrs_post_init__(self) -> None:
        config = self.workdir / "config"
        config.mkdir(parents=True, exist_ok=True)
        self.api = APIServer(config)
        self.node = Node(self.workdir, config, self.subnet, self.bridge,
                         extra_args=("--proxy", self.proxy))

    def start(self, timeout: float = 300) -> None:
        assert os.geteuid() == 0, "the conformance runner needs root (pilotfish up)"
        self.api.apply([ISTIO_GATEWAY_CLASS], "istio")
        self.apply_manifest(manifests.BASE_MANIFESTS, "base")
        for obj in certificates.setup_objects():
            self.api.create(obj, "base")
        if self.mesh:
            self.api.apply([mesh_document(d) for d in manifests.documents(
                self.suite, manifests.MESH_MANIFESTS)], "mesh")
        self.node.start(timeout=timeout)

    def stop(self) -> list[str]:
        """Stop and tear down the node; what of it is left (nothing, normally)."""
        self._netns |= {p["netns"] for p in self.node.status()["pods"]}
        self.node.stop()
        self.node.down()
        return leftovers(self.node, sorted(self._netns))

    def apply_manifest(self, manifest: str, folder: str) -> list[Key]:
        docs = [self.applier.prepare(d) for d in manifests.documents(self.suite, manifest)]
        return self.api.apply(docs, folder)

    # -- reads -----------------------------------------------------------------------------

    def statuses(self) -> dict[Key, dict[str, Any]]:
        """Discovery's status view, Gateway API kinds only, by key."""
        answer = http(f"{self.node.debug}/debug/gateway_status", timeout=5)
        out = {}
        for item in json.loads(answer.body):
            if str(item.get("apiVersion", "")).startswith(GATEWAY_GROUP):
                out[(item["kind"], item["namespace"], item["name"])] = item["status"]
        return out

    def pods(self) -> list[Pod]:
        state = NodeState.load(self.node.state_dir)
        if state is None:
            return []
        objects = self._cluster_objects("Pod")
        out = []
        for pod in status_data(state)["pods"]:
            found = objects.get(("Pod", pod["namespace"], pod["name"]))
            meta = (found or {}).get("metadata") or {}
            ready = pod["status"] == "running" and pod["sidecar"] in ("-", "ready")
            # The node takes a pod out of the cluster view before it stops it.
            out.append(Pod(pod["name"], pod["namespace"], ready, pod["ip"],
                           meta.get("labels") or {}, meta.get("annotations") or {},
                           terminating=found is None))
            self._netns.add(pod["netns"])
        return out

    def generated(self) -> dict[Key, dict[str, Any]]:
        """Objects the node's controllers made (a Gateway's ServiceAccount and Service)."""
        return {key: obj for key, obj in self._cluster_objects("ServiceAccount", "Service").items()
                if key not in self.api.objects}

    def _cluster_objects(self, *kinds: str) -> dict[Key, dict[str, Any]]:
        path = self.node.state_dir / "cluster" / "cluster.yaml"
        try:
            text = path.read_text()
        except OSError:
            return {}
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        out = {}
        for doc in yaml.load_all(text, Loader=loader):
            if isinstance(doc, dict) and doc.get("kind") in kinds:
                out[key_of(doc)] = doc
        return out

    def snapshot(self, needs: Iterable[str] = ()) -> Snapshot:
        needs = set(needs)
        return Snapshot(objects=dict(self.api.objects), statuses=self.statuses(),
                        pods=self.pods() if "pods" in needs else (),
                        generated=self.generated() if "generated" in needs else {})

    def secret_data(self, ref: Ref) -> Mapping[str, str]:
        return decoded(self.api.get(("Secret", *ref)).get("data") or {})

    def configmap_data(self, ref: Ref) -> Mapping[str, str]:
        return dict(self.api.get(("ConfigMap", *ref)).get("data") or {})

    def first_pod(self, namespace: str, selector: str) -> Pod:
        """The first pod (by name) of the namespace whose labels match the equality
        selector (``ConnectToAppInNamespace``)."""
        wanted = dict(part.split("=", 1) for part in selector.split(","))
        matching = sorted((p for p in self.pods() if p.namespace == namespace
                           and not p.terminating and all(
                               p.labels.get(k) == v for k, v in wanted.items())),
                          key=lambda p: p.name)
        if not matching:
            raise LookupError(f"no pods found in app {selector} of {namespace}")
        return matching[0]

    def pod_ip(self, namespace: str, selector: str) -> str:
        ip = self.first_pod(namespace, selector).ip
        return f"[{ip}]" if ":" in ip else ip

    def pod_exec(self, namespace: str, selector: str) -> Callable[[list[str]], str]:
        """A function running argv in ``first_pod``, returning its stdout."""
        pod = self.first_pod(namespace, selector)

        def run(argv: list[str]) -> str:
            try:
                done = self.node.exec(f"{pod.namespace}/{pod.name}", argv, timeout=60)
            except subprocess.TimeoutExpired as exc:
                raise OSError(f"exec in {pod.name} timed out") from exc
            if done.returncode != 0 and not done.stdout.strip():
                raise OSError(f"exec in {pod.name}: {done.returncode}: {done.stderr.strip()}")
            return done.stdout
        return run

    def service_logs(self, service: Ref) -> list[str]:
        """``DumpEchoLogs``: the log lines of the pods labelled ``app=<name>`` in the
        namespace (container ``<name>``), but failed ones."""
        namespace, name = service
        lines: list[str] = []
        state = NodeState.load(self.node.state_dir)
        failed = {p.name for p in state.pods.values() if p.status == "failed"} if state else set()
        for pod in self.pods():
            if pod.namespace == namespace and pod.labels.get("app") == name and \
                    pod.name not in failed:
                lines += self.pod_log(pod, name).splitlines()
        return lines

    def pod_log(self, pod: Pod, container: str) -> str:
        return self.node.log(f"{pod.name}.{pod.namespace}.{container}.log")
