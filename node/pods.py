"""Per-pod decisions the node makes from the Pod object (sans-IO): sidecar or not, which
user the app runs as, the containers' command lines with Kubernetes' env expansion.

There are no images on the node: a container runs its ``command``/``args`` on the host's
filesystem. A container without a command whose image is in ``IMAGE_COMMANDS`` runs the
command listed there instead (the image's entrypoint, as pilotfish provides it), and one
whose image is Istio's proxy (``istio/proxyv2`` with ``proxy router``) is run by the node
as ``pilotfish agent``. Secret volumes are written into the pod's folder; a ``mountPath``
named in the container's env values or args is replaced with that folder, since pods share
the host's filesystem.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Any

import attrs

from pilotfish.cni.pod import injected_proxy, proxy_type
from pilotfish.core.ambient.enrollment import TUNNEL_LABEL
from pilotfish.core.meshconfig import proxy_config
from pilotfish.core.objects import ConfigObject
from pilotfish.discovery.inject import policy

INTERCEPTION_ANNOTATION = "sidecar.istio.io/interceptionMode"
DEFAULT_APP_UID = 1001  # any user but the proxy's 1337
PROXY_UID = 1337


PYTHON = "{python}"  # in IMAGE_COMMANDS: the node's own interpreter
# Image name (the last part of the repository, without registry or tag) → the command that
# stands in for its entrypoint. docs/node.md lists them.
IMAGE_COMMANDS: Mapping[str, tuple[str, ...]] = {
    # registry.k8s.io/gateway-api/conformance/echo-basic: the Gateway API suite's backend
    "echo-basic": (PYTHON, "-m", "pilotfish.demo.echo_basic"),
}
PROXY_IMAGE_NAME = "proxyv2"  # Istio's proxy image; its args say the role: proxy router


@attrs.frozen
class Container:
    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    uid: int
    proxy: str = ""  # "router": the proxy itself, run by the node as pilotfish agent


def image_name(image: str) -> str:
    """``registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0`` → ``echo-basic``."""
    last = image.rsplit("/", 1)[-1]
    return last.split("@", 1)[0].split(":", 1)[0]


def image_command(image: str, python: str) -> tuple[str, ...]:
    """The stand-in entrypoint of a known image (empty when the image is not known)."""
    command = IMAGE_COMMANDS.get(image_name(image), ())
    return tuple(python if part == PYTHON else part for part in command)


def proxy_role(raw: Mapping[str, Any]) -> str:
    """``router`` for Istio's proxy image run as ``proxy router`` (the container a Gateway's
    pod has), ``waypoint`` for ``proxy waypoint`` (a waypoint's), or pilotfish's as ``agent
    --type router`` (the gateway injection template's), else ""."""
    args = [str(a) for a in raw.get("args") or ()]
    if image_name(str(raw.get("image") or "")) == PROXY_IMAGE_NAME and args[:1] == ["proxy"]:
        return args[1] if len(args) > 1 and args[1] in ("router", "waypoint") else ""
    if "agent" in args and proxy_type(raw) == "router":  # the gateway injection template's
        return "router"
    return ""


@attrs.frozen
class ProxyUser:
    """Who an injected sidecar's agent and proxy run as, with which capabilities."""

    uid: int = PROXY_UID
    gid: int = PROXY_UID
    caps: tuple[str, ...] = ()


def interception_mode(pod: ConfigObject) -> str:
    """What Istio's injector tells the sidecar (ISTIO_META_INTERCEPTION_MODE): the pod's
    ``sidecar.istio.io/interceptionMode``, else its ``proxy.istio.io/config``
    ``interceptionMode``, else REDIRECT. ValueError names a bad annotation."""
    mode = pod.annotations.get(INTERCEPTION_ANNOTATION)
    if mode is None:
        mode = proxy_config(pod.annotations).get("interceptionMode") or "REDIRECT"
    return str(mode).strip().upper()


ENABLE_HBONE = "ISTIO_META_ENABLE_HBONE"


def hbone_labels(pod: ConfigObject) -> dict[str, str]:
    """What Istio's injection template adds to a sidecar's pod whose ProxyConfig
    (``proxy.istio.io/config``) sets ``proxyMetadata: {ISTIO_META_ENABLE_HBONE: "true"}``:
    ``networking.istio.io/tunnel: http`` (unless the pod names another), which makes its
    sidecar take HBONE and WDS mark it so. A bad annotation gives nothing here; the pod's
    other checks name it."""
    try:
        metadata = proxy_config(pod.annotations).get("proxyMetadata") or {}
    except ValueError:
        return {}
    if not isinstance(metadata, Mapping) or str(metadata.get(ENABLE_HBONE)).lower() != "true":
        return {}
    return {TUNNEL_LABEL: pod.labels.get(TUNNEL_LABEL) or "http"}


def sidecar_user(pod: ConfigObject) -> ProxyUser:
    """uid/gid 1337 without capabilities, as Istio injects a sidecar; in TPROXY mode, as
    its injector does, root in group 1337 with NET_ADMIN alone: transparent sockets and
    marks need it, and uid 0 takes the proxy's own connections to the app (sent from the
    client's address) past the uid-1337 rule that would capture them again, while the
    group still keeps its outbound traffic out of capture."""
    if interception_mode(pod) == "TPROXY":
        return ProxyUser(0, PROXY_UID, ("net_admin",))
    return ProxyUser()


def injected(pod: ConfigObject) -> bool:
    """Whether the injection webhook gave the pod its sidecar (not a gateway's router)."""
    proxy = injected_proxy(pod.body)
    return proxy is not None and proxy_type(proxy) == "sidecar"


def app_containers(pod: ConfigObject) -> list[Mapping[str, Any]]:
    """The pod's containers but an injected sidecar, which the node runs itself (as
    ``pilotfish agent`` with the node's paths for what it mounts)."""
    proxy = injected_proxy(pod.body) if injected(pod) else None
    return [raw for raw in pod.spec.get("containers") or () if raw is not proxy]


def router_container(pod: ConfigObject) -> bool:
    return any(proxy_role(raw) for raw in pod.spec.get("containers") or ())


def sysctls(pod: ConfigObject) -> list[tuple[str, str]]:
    """``securityContext.sysctls``: namespaced sysctls, set in the pod's netns."""
    context = pod.spec.get("securityContext") or {}
    return [(str(s.get("name")), str(s.get("value"))) for s in context.get("sysctls") or ()
            if s.get("name")]


@attrs.frozen
class VolumeSource:
    """A Secret or ConfigMap volume: which object, which keys as which files (none: every
    key as itself), and whether the pod starts without it (``optional``)."""

    kind: str  # Secret or ConfigMap
    name: str
    items: list[tuple[str, str]] = attrs.Factory(list)  # (key, file path)
    optional: bool = False


def secret_volumes(pod: ConfigObject) -> dict[str, VolumeSource]:
    """Volume name → its source, for the Secret and ConfigMap volumes."""
    out = {}
    for volume in pod.spec.get("volumes") or ():
        for kind, field, name_field in (("Secret", "secret", "secretName"),
                                        ("ConfigMap", "configMap", "name")):
            source = volume.get(field)
            if isinstance(source, Mapping) and source.get(name_field):
                items = [(str(i.get("key")), str(i.get("path")))
                         for i in source.get("items") or ()]
                out[str(volume.get("name"))] = VolumeSource(
                    kind, str(source[name_field]), items, source.get("optional") is True)
    return out


def secret_files(secret: Mapping[str, Any], items: list[tuple[str, str]]
                 ) -> dict[str, bytes]:
    """The files a Secret (or ConfigMap) volume holds: relative path → content."""
    data: dict[str, bytes] = {}
    encoded = secret.get("binaryData") if secret.get("kind") == "ConfigMap" else \
        secret.get("data")
    for key, value in (encoded or {}).items():
        try:
            data[str(key)] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            continue
    plain = secret.get("data") if secret.get("kind") == "ConfigMap" else \
        secret.get("stringData")
    for key, value in (plain or {}).items():
        data[str(key)] = str(value).encode()
    if not items:
        return data
    return {path: data[key] for key, path in items if key in data}


def mount_paths(raw: Mapping[str, Any], volume_dirs: Mapping[str, str]) -> dict[str, str]:
    """A container's mountPath → the folder on the node that holds the volume."""
    return {str(m.get("mountPath")).rstrip("/"): volume_dirs[str(m.get("name"))]
            for m in raw.get("volumeMounts") or ()
            if m.get("mountPath") and str(m.get("name")) in volume_dirs}


def _remount(text: str, mounts: Mapping[str, str]) -> str:
    for mount, folder in mounts.items():
        if text == mount or text.startswith(mount + "/"):
            return folder + text[len(mount):]
    return text


def same_but_metadata(one: ConfigObject, other: ConfigObject) -> bool:
    """Do two versions of a pod differ only in labels and annotations (which change on a
    running pod, where anything else replaces it)?"""
    def rest(obj: ConfigObject) -> dict[str, Any]:
        body = dict(obj.body)
        metadata = {k: v for k, v in dict(body.get("metadata") or {}).items()
                    if k not in ("labels", "annotations")}
        return {**body, "metadata": metadata}

    return one.api_version == other.api_version and rest(one) == rest(other)


def wants_sidecar(pod: ConfigObject, namespace_labels: Mapping[str, str]) -> bool:
    """Istio's injection rules, as the injector has them (``inject.policy``): the pod's
    ``sidecar.istio.io/inject`` (label, else annotation) when it says true or false, else
    the injection webhooks' selectors (``istio-injection=enabled`` or ``istio.io/rev=default``
    on the namespace, or on the pod in a namespace with neither). The node has no webhook
    stage, so an annotation saying true counts as the label would."""
    choice = policy.explicit_choice({"metadata": pod.metadata})
    if choice is not None:
        return choice
    return policy.selected(namespace_labels, pod.labels)


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


def containers(pod: ConfigObject, ip: str, node_env: Mapping[str, str] | None = None,
               python: str = "python3", volume_dirs: Mapping[str, str] | None = None,
               ) -> list[Container]:
    """The pod's containers as processes to run. ``node_env`` holds what the node adds to
    every container's environment (e.g. ``PILOTFISH_DISCOVERY``); ``python`` is the
    interpreter for the images pilotfish stands in for; ``volume_dirs`` maps volume names
    to the folders that hold them."""
    out = []
    for raw in app_containers(pod):
        role = proxy_role(raw)
        if role:
            out.append(Container(str(raw.get("name", "")), (), {}, PROXY_UID, proxy=role))
            continue
        mounts = mount_paths(raw, volume_dirs or {})
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
                env[item["name"]] = _remount(expand(str(item["value"]), env), mounts)
        command = [str(c) for c in raw.get("command") or []] or list(
            image_command(str(raw.get("image") or ""), python))
        if not command:
            continue  # an image's entrypoint the node does not know: nothing to run
        argv = tuple(_remount(expand(str(a), env), mounts)
                     for a in [*command, *(raw.get("args") or [])])
        if argv:
            out.append(Container(str(raw.get("name", "")), argv, env, _run_as(pod, raw)))
    return out


def container_ports(pod: ConfigObject) -> list[tuple[str, int]]:
    ports = []
    for raw in app_containers(pod):
        for port in raw.get("ports") or []:
            if port.get("containerPort"):
                ports.append((str(port.get("name") or ""), int(port["containerPort"])))
    return ports
