"""Per-pod decisions the node makes from the Pod object (sans-IO): sidecar or not, which
user the app runs as, the containers' command lines with Kubernetes' env expansion."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import attrs

from pilotfish.core.objects import ConfigObject

INJECT_LABEL = "istio-injection"
INJECT_ANNOTATION = "sidecar.istio.io/inject"
DEFAULT_APP_UID = 1001  # any user but the proxy's 1337
PROXY_UID = 1337


@attrs.frozen
class Container:
    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    uid: int


def wants_sidecar(pod: ConfigObject, namespace_labels: Mapping[str, str]) -> bool:
    """Istio's injection rule: the pod annotation wins, else the namespace label."""
    annotation = str(pod.annotations.get(INJECT_ANNOTATION, "")).lower()
    label = str(pod.labels.get(INJECT_ANNOTATION, "")).lower()
    for choice in (label, annotation):
        if choice in ("true", "false"):
            return choice == "true"
    return namespace_labels.get(INJECT_LABEL) == "enabled"


def netns_name(pod: ConfigObject, node: str = "") -> str:
    """A short unique netns name; ``node`` (the bridge) keeps two nodes on one host apart."""
    digest = hashlib.sha256(f"{node}/{pod.namespace}/{pod.name}".encode()).hexdigest()[:6]
    return f"pf-{pod.name[:20]}-{digest}"


def _run_as(pod: ConfigObject, container: Mapping[str, Any]) -> int:
    for context in (container.get("securityContext"), pod.spec.get("securityContext")):
        if isinstance(context, Mapping) and context.get("runAsUser") is not None:
            return int(context["runAsUser"])
    return DEFAULT_APP_UID


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (unknown names stay as written)."""
    out = text
    for name, value in env.items():
        out = out.replace(f"$({name})", value)
    return out


def containers(pod: ConfigObject, ip: str, node_env: Mapping[str, str] | None = None
               ) -> list[Container]:
    """The pod's containers as processes to run. ``node_env`` holds what the node adds to
    every container's environment (e.g. ``PILOTFISH_DISCOVERY``)."""
    out = []
    for raw in pod.spec.get("containers") or []:
        env = {**(node_env or {}), "POD_NAME": pod.name, "POD_NAMESPACE": pod.namespace,
               "POD_IP": ip}
        for item in raw.get("env") or []:
            field = ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            if field == "status.podIP":
                env[item["name"]] = ip
            elif field == "metadata.name":
                env[item["name"]] = pod.name
            elif field == "metadata.namespace":
                env[item["name"]] = pod.namespace
            elif "value" in item:
                env[item["name"]] = expand(str(item["value"]), env)
        argv = tuple(expand(str(a), env) for a in [*(raw.get("command") or []),
                                                  *(raw.get("args") or [])])
        if argv:
            out.append(Container(str(raw.get("name", "")), argv, env, _run_as(pod, raw)))
    return out


def container_ports(pod: ConfigObject) -> list[tuple[str, int]]:
    ports = []
    for raw in pod.spec.get("containers") or []:
        for port in raw.get("ports") or []:
            if port.get("containerPort"):
                ports.append((str(port.get("name") or ""), int(port["containerPort"])))
    return ports
