"""Injection of one pod: the pure function both the webhook and ``kube-inject`` call.

``inject(pod, request)`` returns the injected pod (the input is not changed), in the
order Istio's injector works:

1. the pod's annotations are checked (``annotations.check``);
2. what an earlier injection added is taken out (the containers its
   ``sidecar.istio.io/status`` lists), and containers the user customised then
   (``proxy.istio.io/overrides``) are put back, so injecting twice changes nothing;
3. the templates the pod asks for (``inject.istio.io/templates``, default ``sidecar``) are
   rendered and strategically merged onto the pod;
4. containers the pod itself defines under an injected name (``istio-proxy``,
   ``istio-init``) are merged back over the injected ones — the user's fields win — and
   recorded in ``proxy.istio.io/overrides``;
5. Prometheus scraping and the app's probes are rewritten (``rewrite``), the status
   annotation and network label set, and the containers ordered: the proxy last among
   containers (first when the app waits for it), or — as a native sidecar — first among
   init containers after ``istio-init``, so that other init containers are in the mesh.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from pilotfish.discovery.inject import annotations as annotation_checks
from pilotfish.discovery.inject import gateway, gotemplate, grpc, grpc_agent, openshift, rewrite
from pilotfish.discovery.inject.merge import merge
from pilotfish.discovery.inject.quantity import canonical_resources
from pilotfish.discovery.inject.settings import InjectionError, Settings
from pilotfish.discovery.inject.template import ANN, INIT, PROXY, Context, Workload, render

STATUS = "sidecar.istio.io/status"
OVERRIDES = "proxy.istio.io/overrides"
TEMPLATES = "inject.istio.io/templates"
GATEWAY = "gateway"  # the template of a pod that is a gateway (gateway.py)
VALIDATION = "istio-validation"
CORE_DUMP = "enable-core-dump"
AUTO_IMAGE = "auto"  # a container image the injector fills in
NETWORK_LABEL = "topology.istio.io/network"


@attrs.frozen
class Request:
    """One injection: the pod's namespace and owner, and the settings in force."""

    settings: Settings
    workload: Workload
    native_sidecars: bool | None = None  # None: the values' global.nativeSidecar
    proxy_env: Mapping[str, str] = attrs.field(factory=dict)  # /inject/cluster/X/net/Y
    # The pod's Namespace's annotations, where the caller knows them (the webhook): on
    # OpenShift they give the proxy's uid and gid (openshift.py).
    namespace_annotations: Mapping[str, str] = attrs.field(factory=dict)


def inject(pod: Mapping[str, Any], request: Request) -> dict[str, Any]:
    """The pod with its sidecar. Raises ``InjectionError`` naming what is wrong."""
    original = copy.deepcopy(dict(pod))
    metadata = original.setdefault("metadata", {})
    annotations = metadata.get("annotations") or {}
    annotation_checks.check(annotations)
    settings = request.settings
    config = settings.proxy_config(annotations)
    stripped = _reinsert_overrides(_strip(original, settings))
    native = request.native_sidecars
    if native is None:
        native = settings.flag("global.nativeSidecar")
    proxy_env = dict(request.proxy_env)
    network = str((metadata.get("labels") or {}).get(NETWORK_LABEL)
                  or proxy_env.get("ISTIO_META_NETWORK") or settings.text("global.network"))
    cluster = proxy_env.get("ISTIO_META_CLUSTER_ID") or settings.text(
        "global.multiCluster.clusterName")
    user_proxy = _find(_spec(original).get("containers"), PROXY) or \
        _find(_spec(original).get("initContainers"), PROXY) or {}
    security = user_proxy.get("securityContext") or {}
    uid, gid = _id(security.get("runAsUser")), _id(security.get("runAsGroup"))
    platform_ids = _openshift(annotations, config, request)
    if platform_ids:
        uid, gid = platform_ids
    context = Context(pod=stripped, settings=settings, proxy_config=config,
                      workload=request.workload, native=native, proxy_uid=uid, proxy_gid=gid)
    templates = _templates(annotations, settings)
    if context.native_sidecar and GATEWAY not in templates:
        stripped = _proxy_to_init(stripped)  # a gateway's proxy is its main container
    merged: dict[str, Any] = stripped
    injected: dict[str, Any] = {}
    for name in templates:
        fragment = _template(name, context)
        merged = merge(merged, fragment)
        injected = merge(injected, fragment)
    merged = _reapply_overrides(merged, original, injected, platform_ids is not None)
    _proxy_env(merged, {**proxy_env, **({"ISTIO_META_CLUSTER_ID": cluster} if cluster else {}),
                        **({"ISTIO_META_NETWORK": network} if network else {})})
    merged_meta = merged.setdefault("metadata", {})
    merged_meta.setdefault("annotations", {})
    merged_meta.setdefault("labels", {})
    rewrite.merge_prometheus(merged, settings)
    rewrite.rewrite_probes(merged, settings, rewrite.probers_of(_spec(original))
                           if STATUS in annotations else None)
    _metadata(merged, injected, settings, network)
    _reorder(merged, settings, config)
    return merged


def _openshift(annotations: Mapping[str, Any], config: Mapping[str, Any],
               request: Request) -> tuple[int, int] | None:
    """On OpenShift, the proxy's uid and gid from the namespace's ranges — not in TPROXY
    mode, where the proxy runs as root in group 1337 as everywhere."""
    if not request.settings.openshift:
        return None
    key = ANN + "interceptionMode"
    mode = annotations[key] if key in annotations else config.get("interceptionMode")
    if str(mode) == "TPROXY":
        return None
    return openshift.proxy_ids(request.namespace_annotations)


def _templates(annotations: Mapping[str, Any], settings: Settings) -> list[str]:
    chosen = str(annotations.get(TEMPLATES) or "")
    if chosen:
        return [name.strip() for name in chosen.split(",") if name.strip()]
    return [str(n) for n in settings.value("sidecarInjectorWebhook.defaultTemplates") or ()] \
        or ["sidecar"]


def _template(name: str, context: Context) -> Mapping[str, Any]:
    """A template's fragment: ``sidecar``, ``gateway``, ``grpc-simple`` and ``grpc-agent``
    are built here; others come from the values' ``sidecarInjectorWebhook.templates``,
    YAML with Go template directives (`gotemplate`: the subset custom templates use)."""
    built_in = {"sidecar": render, GATEWAY: gateway.render, "grpc-simple": grpc.render,
                "grpc-agent": grpc_agent.render}
    if name in built_in:
        return built_in[name](context)
    import yaml

    text = (context.settings.value("sidecarInjectorWebhook.templates") or {}).get(name)
    if text is None:
        raise InjectionError(f"annotation {TEMPLATES}: no template {name!r}; pilotfish "
                             "has 'sidecar', 'gateway', 'grpc-simple', 'grpc-agent' and "
                             "those in the values' sidecarInjectorWebhook.templates")
    text = str(text)
    if "{{" in text:  # Go template directives, over the pod as Istio's injector gives it
        try:
            text = gotemplate.render(text, {
                "ObjectMeta": context.pod.get("metadata") or {}, "Spec": context.spec,
                "Values": context.settings.values, "Revision": context.settings.revision,
                "ProxyConfig": context.proxy_config})
        except gotemplate.TemplateError as exc:
            raise InjectionError(f"template {name!r}: {exc}") from None
    try:
        fragment = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InjectionError(f"template {name!r}: not YAML: {exc}") from None
    if not isinstance(fragment, dict):
        raise InjectionError(f"template {name!r}: expected a pod fragment (metadata, spec)")
    return fragment


def parse_status(text: str | None) -> dict[str, list[str]]:
    """The ``sidecar.istio.io/status`` annotation: what an injection added, by kind."""
    if not text:
        return {}
    try:
        status = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(status, dict):
        return {}
    return {k: [str(n) for n in v] for k, v in status.items() if isinstance(v, list)}


def _strip(pod: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The pod without what an earlier injection added (its status annotation says)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    status = parse_status(annotations.get(STATUS))
    if STATUS not in annotations:
        return pod
    out = copy.deepcopy(pod)
    spec = out.setdefault("spec", {})
    for field, kind in (("containers", "containers"), ("initContainers", "initContainers")):
        if spec.get(field) is not None:
            spec[field] = [c for c in spec[field] if c.get("name") not in status.get(kind, ())]
    meta = out["metadata"]
    agent = str((settings.mesh.get("defaultConfig") or {}).get("statusPort") or 15020)
    if meta["annotations"].get("prometheus.io/port") == agent:
        for name in ("prometheus.io/port", "prometheus.io/path", "prometheus.io/scrape"):
            meta["annotations"].pop(name, None)
    meta["annotations"].pop(STATUS, None)
    return out


def _overrides(annotations: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    text = annotations.get(OVERRIDES)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise InjectionError(f"annotation {OVERRIDES}: not JSON") from None
    if not isinstance(value, dict):
        raise InjectionError(f"annotation {OVERRIDES}: expected an object with containers "
                             "and initContainers")
    return {k: [c for c in v if isinstance(c, dict)] for k, v in value.items()
            if k in ("containers", "initContainers") and isinstance(v, list)}


def _reinsert_overrides(pod: dict[str, Any]) -> dict[str, Any]:
    """Containers a first injection found customised, put back for a second one."""
    overrides = _overrides((pod.get("metadata") or {}).get("annotations") or {})
    if not overrides:
        return pod
    out = copy.deepcopy(pod)
    spec = out.setdefault("spec", {})
    for field in ("containers", "initContainers"):
        names = {c.get("name") for c in spec.get(field) or ()}
        extra = [c for c in overrides.get(field, ()) if c.get("name") not in names]
        if extra:
            spec[field] = [*(spec.get(field) or []), *copy.deepcopy(extra)]
    return out


def _find(containers: Sequence[Mapping[str, Any]] | None, name: str
          ) -> Mapping[str, Any] | None:
    return next((c for c in containers or () if c.get("name") == name), None)


def _reapply_overrides(merged: dict[str, Any], original: Mapping[str, Any],
                       injected: Mapping[str, Any], platform_ids: bool = False
                       ) -> dict[str, Any]:
    """The user's own version of each injected container, merged over the injected one.
    With ``platform_ids`` (OpenShift) the proxy's uid and gid are the namespace's: the
    user's ``runAsUser`` and ``runAsGroup`` for it are neither applied nor recorded."""
    annotations = (original.get("metadata") or {}).get("annotations") or {}
    status = parse_status(annotations.get(STATUS))
    existing = _overrides(annotations)
    spec = original.get("spec") or {}
    recorded: dict[str, list[dict[str, Any]]] = {}
    for field in ("containers", "initContainers"):
        for container in (injected.get("spec") or {}).get(field) or ():
            name = container.get("name")
            match = _find(existing.get(field), name)  # what a first injection recorded
            if match is None:
                if name in status.get(field, ()):
                    continue  # injected before: the new template's version stands
                match = _find(spec.get("containers"), name) or \
                    _find(spec.get("initContainers"), name)
            if match is None:
                continue
            overlay = copy.deepcopy(dict(match))
            if overlay.get("image") == AUTO_IMAGE:
                overlay.pop("image")
            if isinstance(overlay.get("resources"), Mapping):
                overlay["resources"] = canonical_resources(overlay["resources"])
            if name == PROXY and platform_ids and \
                    isinstance(overlay.get("securityContext"), Mapping):
                overlay["securityContext"] = {
                    k: v for k, v in overlay["securityContext"].items()
                    if k not in ("runAsUser", "runAsGroup")}
            recorded.setdefault(field, []).append(overlay)
            if name == PROXY and isinstance(overlay.get("securityContext"), Mapping):
                # The user's runAsUser is the proxy's uid already (the template used it,
                # and capture exempts it); TPROXY still runs the proxy as root.
                overlay = {**overlay, "securityContext": {
                    k: v for k, v in overlay["securityContext"].items() if k != "runAsUser"}}
            merged = merge(merged, {"spec": {field: [overlay]}})
    if recorded and STATUS not in annotations:
        merged.setdefault("metadata", {}).setdefault("annotations", {})[OVERRIDES] = \
            json.dumps(recorded, separators=(",", ":"))
    return merged


def _spec(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    return pod.get("spec") or {}


def _id(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _proxy_to_init(pod: dict[str, Any]) -> dict[str, Any]:
    """As a native sidecar the proxy is an init container: a user's ``istio-proxy`` among
    the containers moves there, so the template merges into it."""
    user = _find(_spec(pod).get("containers"), PROXY)
    if user is None:
        return pod
    out = copy.deepcopy(pod)
    spec = out["spec"]
    spec["containers"] = [c for c in spec["containers"] if c.get("name") != PROXY]
    if _find(spec.get("initContainers"), PROXY) is None:
        spec["initContainers"] = [*(spec.get("initContainers") or []), copy.deepcopy(user)]
    return out


def _proxy_env(pod: dict[str, Any], env: Mapping[str, str]) -> None:
    """Variables the webhook's path sets (``/inject/cluster/X/net/Y``), and the cluster and
    network in force, over those the template gave the proxy."""
    proxy = rewrite.find_proxy(pod.get("spec") or {})
    if proxy is None or not env:
        return
    items = proxy.setdefault("env", [])
    left = dict(env)
    for item in items:
        name = item.get("name")
        if name in left:
            value = left.pop(name)
            item.clear()
            item.update(name=name, value=value)
    items += [{"name": name, "value": value} for name, value in sorted(left.items())]


def _metadata(pod: dict[str, Any], injected: Mapping[str, Any], settings: Settings,
              network: str) -> None:
    metadata = pod["metadata"]
    for key, value in (settings.value("sidecarInjectorWebhook.injectedAnnotations")
                       or {}).items():
        metadata["annotations"][str(key)] = str(value)
    spec = injected.get("spec") or {}

    def names(field: str) -> list[str] | None:
        found = [str(item.get("name")) for item in spec.get(field) or ()]
        return found or None

    metadata["annotations"][STATUS] = json.dumps({
        "initContainers": names("initContainers"), "containers": names("containers"),
        "volumes": names("volumes"), "imagePullSecrets": names("imagePullSecrets"),
        "revision": settings.revision or "default"}, separators=(",", ":"))
    if network and NETWORK_LABEL not in metadata["labels"]:
        metadata["labels"][NETWORK_LABEL] = network


def _move(containers: list[Any] | None, name: str, first: bool) -> list[Any] | None:
    if not containers:
        return containers
    found = [c for c in containers if c.get("name") == name]
    rest = [c for c in containers if c.get("name") != name]
    return [*found, *rest] if first else [*rest, *found]


def _reorder(pod: dict[str, Any], settings: Settings, config: Mapping[str, Any]) -> None:
    spec = pod.setdefault("spec", {})
    hold = bool(config.get("holdApplicationUntilProxyStarts")) or settings.flag(
        "global.proxy.holdApplicationUntilProxyStarts")
    if spec.get("containers") is not None:
        spec["containers"] = _move(spec["containers"], PROXY, first=hold)
    inits = spec.get("initContainers")
    if _find(inits, PROXY) is not None:
        # {istio-init | istio-validation} → proxy → the rest: other init containers run
        # with the proxy up.
        for name in (CORE_DUMP, PROXY, VALIDATION, INIT):
            inits = _move(inits, name, first=True)
    else:
        # Capture last, so other init containers are not cut off from the network.
        inits = _move(_move(_move(inits, CORE_DUMP, first=False), INIT, first=False),
                      VALIDATION, first=True)
    if inits is not None:
        spec["initContainers"] = inits
