"""The CNI node agent's watch on the API server: pods of its node that join or leave ambient
mode while running (``pilotfish cni-agent --kubeconfig PATH --node-name NODE``).

A new pod reaches the agent through ``pilotfish-cni``. A pod already running that gets
``istio.io/dataplane-mode: ambient`` (on itself or its namespace) never passes the plugin again,
so the agent watches Pods and Namespaces (the Kubernetes source: list, then watch, resumed
without loss) and, for each running pod of its node that ambient mode now enrolls and it does
not hold, finds the pod's network namespace and captures it as on ``/cmdadd``; a held pod that
is no longer enrolled (label removed, ``none``), or that the watch captured and is deleted,
is let go as on ``/cmddel``. The pod is then
annotated ``ambient.istio.io/redirection: enabled`` (or ``disabled``), as Istio's agent marks it.

The namespace is found by the pod's IP: the one network namespace, among the named ones
(``/run/netns``) and those of running processes, that holds ``status.podIP``. Istio finds it
through the pod's processes instead; by address works for pods that are namespaces without a
process too, as the local node's are.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from pilotfish.cni.pod import pod_from_object
from pilotfish.core.ambient.enrollment import REDIRECTION_ANNOTATION, in_ambient
from pilotfish.core.interceptor import InterceptorError, PodFacts
from pilotfish.core.objects import ConfigObject
from pilotfish.core.store import ConfigStore
from pilotfish.interceptors.ambient_events import PodEvent
from pilotfish.interceptors.netns_exec import RUN_NETNS, Netns
from pilotfish.node.cni_agent import AgentError, CniAgent
from pilotfish.plugins.kube.client import ApiError
from pilotfish.plugins.kube.source import KubernetesSource

log = logging.getLogger("pilotfish.cni_agent.watch")
RETRY = 2.0  # seconds before a pod that could not be captured is tried again


def network_namespaces() -> Iterator[str]:
    """A path to every network namespace on the machine, each once: the named ones first."""
    seen: set[tuple[int, int]] = set()
    named = sorted(str(p) for p in RUN_NETNS.iterdir()) if RUN_NETNS.is_dir() else []
    processes = (f"/proc/{pid}/ns/net" for pid in sorted(os.listdir("/proc"))
                 if pid.isdigit())
    for path in (*named, *processes):
        try:
            stat = os.stat(path)
        except OSError:
            continue  # a process that ended, a namespace deleted meanwhile
        if (stat.st_dev, stat.st_ino) not in seen:
            seen.add((stat.st_dev, stat.st_ino))
            yield path


def netns_holding(address: str) -> str | None:
    """The path of the network namespace that holds ``address`` (None: none does)."""
    for path in network_namespaces():
        try:
            if address in Netns(path).addresses():
                return path
        except InterceptorError:
            continue
    return None


class PodWatch:
    def __init__(self, agent: CniAgent, kubeconfig: Path, node_name: str,
                 context: str | None = None) -> None:
        self.agent, self.node_name = agent, node_name
        self.source = KubernetesSource(kubeconfig, context)
        self.store = ConfigStore()
        self.watched: set[str] = set()  # uids this watch captured (the others are the plugin's)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Watch until cancelled; started once the first list is in."""
        changed = anyio.Event()

        def wake(_update: Any) -> None:
            changed.set()
        async with anyio.create_task_group() as tasks:
            await tasks.start(self.source.run, self.store)
            self.store.subscribe(wake)
            task_status.started()
            while True:
                changed = anyio.Event()
                retry = await self.reconcile()
                with anyio.move_on_after(RETRY if retry else None):
                    await changed.wait()

    async def reconcile(self) -> bool:
        """Capture and let go as the held objects say; whether something is to be retried."""
        namespaces = {o.name: dict(o.labels) for o in self.store.objects("Namespace")}
        retry = False
        seen: set[str] = set()
        for obj in self.store.objects("Pod"):
            spec, status = obj.body.get("spec") or {}, obj.body.get("status") or {}
            uid = str(obj.metadata.get("uid") or "")
            if spec.get("nodeName") != self.node_name or not uid:
                continue
            seen.add(uid)
            enrolled = in_ambient(obj.labels, obj.annotations, namespaces.get(obj.namespace, {}),
                                  spec)
            held = uid in self.agent.pods
            try:
                if enrolled and not held and status.get("phase") == "Running":
                    retry |= not await self._capture(obj, namespaces, status)
                elif held and not enrolled:
                    netns = self.agent.pods[uid].event.netns
                    await self.agent.remove_pod(PodEvent(netns, PodFacts(
                        name=obj.name, namespace=obj.namespace, uid=uid)))
                    self.watched.discard(uid)
                    await self._mark(obj, "disabled")
            except AgentError as exc:
                log.warning("cni-agent: pod %s/%s: %s", obj.namespace, obj.name, exc)
                retry = True
        # Pods this watch captured and the API server no longer has (a plugin's pods get
        # their DEL from the runtime).
        for uid in sorted(self.watched - seen):
            gone = self.agent.pods.get(uid)
            try:
                if gone is not None:
                    await self.agent.remove_pod(gone.event)
                self.watched.discard(uid)
            except AgentError as exc:
                log.warning("cni-agent: pod %s: letting go: %s", uid, exc)
                retry = True
        return retry

    async def _capture(self, obj: ConfigObject, namespaces: Mapping[str, dict[str, str]],
                       status: Mapping[str, Any]) -> bool:
        address = str(status.get("podIP") or "")
        netns = await anyio.to_thread.run_sync(netns_holding, address) if address else None
        if netns is None:
            log.info("cni-agent: pod %s/%s: no network namespace holds %s yet", obj.namespace,
                     obj.name, address or "its IP (none reported)")
            return False
        pod = pod_from_object(obj.body, ips=(address,),
                              namespace_labels=namespaces.get(obj.namespace, {}))
        await self.agent.add_pod(PodEvent(netns, pod))
        self.watched.add(pod.uid)
        await self._mark(obj, "enabled")
        return True

    async def _mark(self, obj: ConfigObject, value: str) -> None:
        patch = {"metadata": {"annotations": {REDIRECTION_ANNOTATION: value}}}
        try:
            await self.source.thread(
                self.source.client.request, "PATCH",
                f"/api/v1/namespaces/{obj.namespace}/pods/{obj.name}", None, patch,
                "application/merge-patch+json")
        except ApiError as exc:  # the capture stands; only the mark is missing
            log.warning("cni-agent: pod %s/%s: annotating %s=%s: %s", obj.namespace, obj.name,
                        REDIRECTION_ANNOTATION, value, exc)
