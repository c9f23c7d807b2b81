"""What owns a pod, as Istio guesses it (its DeploymentMeta and TypeMeta).

Read by the sidecar injector (the template's workload name) and by ztunnel's Workload
Discovery (``Workload.workload_name`` and ``workload_type``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

_JOB_NAME = re.compile(r"^(.+)-\d{8,11}\Z")  # a CronJob's Job: NAME-<timestamp>


@attrs.frozen
class PodOwner:
    """What owns the pod: a Deployment's name and ``apps/v1``, or the pod itself."""

    name: str
    namespace: str
    api_version: str = "v1"
    kind: str = "Pod"


def pod_owner(pod: Mapping[str, Any], namespace: str) -> PodOwner:
    """A generated pod's controller, with a Deployment behind a ReplicaSet named NAME-HASH
    and a CronJob behind a Job named NAME-TIMESTAMP; else the pod itself."""
    metadata = pod.get("metadata") or {}
    name = str(metadata.get("name") or "")
    labels = metadata.get("labels") or {}
    if metadata.get("generateName"):
        owner = next((ref for ref in metadata.get("ownerReferences") or ()
                      if ref.get("controller")), None)
        if owner is not None:
            kind, api_version = str(owner.get("kind")), str(owner.get("apiVersion"))
            owner_name = str(owner.get("name") or "")
            template_hash = str(labels.get("pod-template-hash") or "")
            if kind == "ReplicaSet" and template_hash and \
                    owner_name.endswith("-" + template_hash):
                return PodOwner(owner_name.removesuffix("-" + template_hash), namespace,
                                api_version, "Deployment")
            if kind == "ReplicationController" and labels.get("deploymentconfig"):
                return PodOwner(str(labels["deploymentconfig"]), namespace, api_version,
                                "DeploymentConfig")
            job = _JOB_NAME.match(owner_name) if kind == "Job" else None
            if job:
                return PodOwner(job[1], namespace, "batch/v1", "CronJob")
            return PodOwner(owner_name or name, namespace, api_version, kind)
    return PodOwner(name, namespace, "v1", "Pod")
