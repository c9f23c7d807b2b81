"""Apps that run as the proxy's user or group (1337), which capture never sees.

istio-iptables returns early for every packet sent by uid 1337 or gid 1337, so that the
proxy's own traffic is not sent back into it. An app running as that user or group
bypasses the mesh without a trace: no mTLS, no policy, no telemetry. Checked on Pods and
on the pod templates of workload controllers, at pod and at container level.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pilotfish.analysis.base import (
    Check,
    Finding,
    Inputs,
    IstioMessage,
    Level,
    PodTemplate,
    finding,
)
from pilotfish.core.objects import FieldPath

PROXY_UID = Check(
    "PF0102", "AppRunsAsProxyUser", Level.WARNING,
    "a pod or container runs as uid or gid 1337, whose traffic is never captured",
    # Istio checks the uid only; a gid of 1337 escapes capture just the same.
    IstioMessage("IST0144", "InvalidApplicationUID", "applicationUID.Analyzer"),
)

PROXY_ID = 1337
PROXY_CONTAINER = "istio-proxy"  # the injected sidecar itself is meant to run as 1337
INJECT = "sidecar.istio.io/inject"
FIELDS = {"runAsUser": "uid", "runAsGroup": "gid"}


def _check(
    pod: PodTemplate, context: Any, path: FieldPath, who: str
) -> Iterator[Finding]:
    if not isinstance(context, Mapping):
        return
    for field, what in FIELDS.items():
        if context.get(field) == PROXY_ID:
            yield finding(
                PROXY_UID, pod.obj, (*path, field),
                f"{who} runs as {what} {PROXY_ID}, the proxy's; the sidecar's capture lets "
                f"traffic from {what} {PROXY_ID} through untouched, so this app's outbound "
                "traffic bypasses the mesh. Use another id",
            )


def _without_sidecar(pod: PodTemplate) -> bool:
    """Opted out of injection: there is no capture to bypass."""
    template = pod.obj.body
    for part in pod.path:
        template = template.get(str(part)) or {}
    metadata = template.get("metadata") or {}
    values = [(metadata.get(k) or {}).get(INJECT) for k in ("labels", "annotations")]
    return any(str(v).lower() == "false" for v in values if v is not None)


def analyze(inputs: Inputs) -> Iterator[Finding]:
    for pod in inputs.pods:
        if _without_sidecar(pod):
            continue
        spec_path = pod.spec_path
        yield from _check(pod, pod.spec.get("securityContext"),
                          (*spec_path, "securityContext"), "the pod")
        for index, container in enumerate(pod.spec.get("containers") or ()):
            if not isinstance(container, Mapping) or container.get("name") == PROXY_CONTAINER:
                continue
            yield from _check(pod, container.get("securityContext"),
                              (*spec_path, "containers", index, "securityContext"),
                              f"container {container.get('name')!r}")
