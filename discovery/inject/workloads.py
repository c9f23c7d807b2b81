"""Injection into the objects a user applies (``kube-inject``): a Pod, or the pod template
of a Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob
or OpenShift DeploymentConfig; a ``List`` item by item. Anything else passes unchanged.

The owner Istio names in ``ISTIO_META_OWNER`` and the canonical service name is the
object itself (a Deployment, not the ReplicaSet the API server would put between).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from pilotfish.discovery.inject import policy
from pilotfish.discovery.inject.pod import Request, inject
from pilotfish.discovery.inject.settings import Settings
from pilotfish.discovery.inject.template import Workload

# kind → where its pod template is
TEMPLATE_PATHS: Mapping[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "DeploymentConfig": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
    "Pod": (),
}

Warn = Callable[[str], None]


def injectable(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("kind") in TEMPLATE_PATHS


def inject_object(obj: Mapping[str, Any], settings: Settings, *,
                  native_sidecars: bool | None = None, warn: Warn = lambda _: None) -> Any:
    """``obj`` with its pods injected (a copy); other objects are returned as they are.
    ``InjectionError`` names the object and what is wrong with it."""
    if isinstance(obj, Mapping) and obj.get("kind") == "List" and \
            isinstance(obj.get("items"), list):
        out = dict(obj)
        out["items"] = [inject_object(item, settings, native_sidecars=native_sidecars,
                                      warn=warn) for item in obj["items"]]
        return out
    if not injectable(obj):
        return obj
    kind = str(obj["kind"])
    metadata = obj.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "")
    name = str(metadata.get("name") or metadata.get("generateName") or "")
    path = TEMPLATE_PATHS[kind]
    holder: Any = obj
    for step in path:
        holder = holder.get(step) if isinstance(holder, Mapping) else None
    if not isinstance(holder, Mapping):
        return obj  # no pod template: nothing to inject (the API server refuses it anyway)
    pod = {"metadata": copy.deepcopy(holder.get("metadata") or {}),
           "spec": copy.deepcopy(holder.get("spec") or {})}
    required, why = policy.injection_required(pod, namespace, settings)
    if not required:
        warn(f'Skipping injection because {kind} "{namespace + "/" if namespace else ""}'
             f'{name}" {why}')
        return obj
    if kind == "Pod":
        workload = policy.workload_of(obj, namespace)
        pod["metadata"] = copy.deepcopy(dict(metadata))
    else:
        workload = Workload(name, namespace, str(obj.get("apiVersion") or ""), kind)
    injected = inject(pod, Request(settings, workload, native_sidecars))
    out = copy.deepcopy(dict(obj))
    if not path:
        out["metadata"] = injected["metadata"]
        out["spec"] = injected["spec"]
        return out
    target: Any = out
    for step in path:
        target = target[step]
    target["metadata"] = injected["metadata"]
    target["spec"] = injected["spec"]
    return out
