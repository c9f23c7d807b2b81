"""The pod a CNI runtime hands ``pilotfish-cni``, read into ``PodFacts``.

Either the runtime passes its facts in the network config's ``runtimeConfig`` under
``pilotfishPod`` (the local node reading files does; see ``cni/plugin.py`` for the shape),
or, as kubelets' runtimes pass only the pod's name and namespace, the plugin reads the Pod
from the API server (`pod_from_object`), as Istio's CNI plugin does. Sans-IO.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pilotfish.core.interceptor import PodFacts

RUNTIME_KEY = "pilotfishPod"


class PodError(ValueError):
    """The runtime's pod facts are invalid; the message names the field."""


def pod_from_runtime_config(value: Any, *, where: str = f"runtimeConfig.{RUNTIME_KEY}",
                            ips: tuple[str, ...] = (), cni_args: Mapping[str, str] = {}
                            ) -> PodFacts:
    """Check and read the ``pilotfishPod`` object; ``ips`` come from the previous result."""
    if not isinstance(value, dict):
        raise PodError(f"{where}: expected an object, got {type(value).__name__}")
    name = value.get("name", cni_args.get("K8S_POD_NAME", ""))
    namespace = value.get("namespace", cni_args.get("K8S_POD_NAMESPACE", ""))
    for field, text in (("name", name), ("namespace", namespace)):
        if not isinstance(text, str) or not text:
            raise PodError(f"{where}.{field}: expected a non-empty string")
    annotations = _string_map(value.get("annotations"), f"{where}.annotations")
    ports = value.get("containerPorts", [])
    if not isinstance(ports, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports):
        raise PodError(f"{where}.containerPorts: expected a list of ports (1-65535)")
    sidecar = value.get("sidecar", "sidecar.istio.io/status" in annotations)
    if not isinstance(sidecar, bool):
        raise PodError(f"{where}.sidecar: expected true or false")
    ids = {}
    for field in ("runAsUser", "runAsGroup"):
        id_ = value.get(field)
        if id_ is not None and (not isinstance(id_, int) or isinstance(id_, bool) or id_ < 0):
            raise PodError(f"{where}.{field}: expected a user/group id (a number >= 0)")
        ids[field] = id_
    uid = value.get("uid", cni_args.get("K8S_POD_UID", ""))
    account = value.get("serviceAccount", "default")
    for field, text in (("uid", uid), ("serviceAccount", account)):
        if not isinstance(text, str):
            raise PodError(f"{where}.{field}: expected a string")
    return PodFacts(
        uid=uid, service_account=account or "default",
        namespace_labels=_string_map(value.get("namespaceLabels"), f"{where}.namespaceLabels"),
        name=name, namespace=namespace, annotations=annotations,
        labels=_string_map(value.get("labels"), f"{where}.labels"), sidecar=sidecar,
        container_ports=tuple(ports), proxy_env=_string_map(value.get("proxyEnv"),
                                                            f"{where}.proxyEnv"),
        run_as_user=ids["runAsUser"], run_as_group=ids["runAsGroup"], ips=ips,
    )


SIDECAR_CONTAINER = "istio-proxy"
INJECTED_ANNOTATION = "sidecar.istio.io/status"


def injected_proxy(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The Pod's injected ``istio-proxy`` container (or native sidecar: an init
    container), or None when the injector has not been at it (no status annotation)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if INJECTED_ANNOTATION not in annotations:
        return None
    spec = pod.get("spec") or {}
    return next((c for field in ("containers", "initContainers")
                 for c in spec.get(field) or ()
                 if isinstance(c, Mapping) and c.get("name") == SIDECAR_CONTAINER), None)


def proxy_type(container: Mapping[str, Any]) -> str:
    """The role a proxy container's arguments give it: Istio's ``proxy ROLE``, or
    pilotfish's ``agent --type ROLE`` (``sidecar`` when they name none). A gateway pod's
    injected proxy is a ``router``, whose traffic is not captured (as Istio's CNI skips
    it)."""
    args = [str(a) for a in container.get("args") or ()]
    if args[:1] == ["proxy"] and len(args) > 1:
        return args[1]
    if "--type" in args and args.index("--type") + 1 < len(args):
        return args[args.index("--type") + 1]
    return "sidecar"


def pod_from_object(pod: Mapping[str, Any], *, ips: tuple[str, ...] = (),
                    namespace_labels: Mapping[str, str] | None = None) -> PodFacts:
    """The facts of a Pod as the API server holds it: the injected proxy's env values,
    user and group, the other containers' ports."""
    where = "the API server's Pod"
    metadata = pod.get("metadata") or {}
    proxy = injected_proxy(pod) or {}
    if proxy and proxy_type(proxy) != "sidecar":
        proxy = {}  # a gateway's router: not a sidecar to capture for
    ports = [int(port["containerPort"]) for c in (pod.get("spec") or {}).get("containers") or ()
             if isinstance(c, Mapping) and c is not proxy
             for port in c.get("ports") or () if isinstance(port, Mapping)
             and isinstance(port.get("containerPort"), int)]
    context = proxy.get("securityContext") or {}
    env = {str(e["name"]): str(e["value"]) for e in proxy.get("env") or ()
           if isinstance(e, Mapping) and "name" in e and "value" in e}
    return pod_from_runtime_config({
        "name": metadata.get("name"), "namespace": metadata.get("namespace"),
        "uid": metadata.get("uid") or "",
        "serviceAccount": (pod.get("spec") or {}).get("serviceAccountName") or "default",
        "annotations": metadata.get("annotations") or {},
        "labels": metadata.get("labels") or {}, "sidecar": bool(proxy),
        "containerPorts": ports, "proxyEnv": env,
        "runAsUser": context.get("runAsUser"), "runAsGroup": context.get("runAsGroup"),
        "namespaceLabels": dict(namespace_labels or {}),
    }, where=where, ips=ips)


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise PodError(f"{where}: expected an object mapping strings to strings")
    return dict(value)

