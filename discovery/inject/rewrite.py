"""What injection rewrites in the app's own settings, so that it keeps working behind the
sidecar: its probes and lifecycle hooks, and where Prometheus scrapes it.

**Probes.** With mutual TLS the kubelet cannot reach the app's HTTP, TCP or gRPC probe
ports itself, so each probe (and each HTTP or TCP ``preStop``/``postStart`` hook) is
pointed at the agent's status port, ``/app-health/CONTAINER/{readyz,livez,startupz}`` and
``/app-lifecycle/CONTAINER/{prestopz,poststartz}``; the originals (named ports resolved)
go to the proxy as JSON in ``ISTIO_KUBE_APP_PROBERS``, merged with what an earlier
injection put there. ``sidecar.istio.io/rewriteAppHTTPProbers`` (else the values'
``sidecarInjectorWebhook.rewriteAppHTTPProbe``) turns it off.

**Prometheus.** Unless the pod says ``prometheus.io/scrape: "false"`` or merging is off
(``prometheus.istio.io/merge-metrics``, else the mesh's ``enablePrometheusMerge``), the
scrape annotations are rewritten to the agent's merged endpoint (``:15020/stats/prometheus``)
and the app's own go to the proxy as ``ISTIO_PROMETHEUS_ANNOTATIONS``; a target on a port
Istio reserves is refused.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from pilotfish.discovery.inject.settings import InjectionError, Settings
from pilotfish.discovery.inject.template import PROXY
from pilotfish.interceptors.capture_settings import parse_bool

PROBERS_ENV = "ISTIO_KUBE_APP_PROBERS"
PROMETHEUS_ENV = "ISTIO_PROMETHEUS_ANNOTATIONS"
REWRITE_ANNOTATION = "sidecar.istio.io/rewriteAppHTTPProbers"
MERGE_ANNOTATION = "prometheus.istio.io/merge-metrics"
TARGETS_ANNOTATION = "prometheus.istio.io/scrape-targets"
# Istio's reserved ports: the proxy's and the agent's.
RESERVED_PORTS = frozenset({15000, 15001, 15004, 15006, 15008, 15009, 15020, 15021, 15053,
                            15090})
_PROBES = (("readinessProbe", "readyz"), ("livenessProbe", "livez"),
           ("startupProbe", "startupz"))
_HOOKS = (("preStop", "prestopz"), ("postStart", "poststartz"))


def find_proxy(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    for field in ("containers", "initContainers"):
        for container in spec.get(field) or ():
            if container.get("name") == PROXY:
                return container
    return None


def probers_of(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The probes an injected pod's proxy holds (``ISTIO_KUBE_APP_PROBERS``)."""
    proxy = find_proxy(spec) or {}
    for item in proxy.get("env") or ():
        if item.get("name") == PROBERS_ENV:
            try:
                value = json.loads(item.get("value") or "{}")
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}
    return {}


def rewrite_probes(pod: dict[str, Any], settings: Settings,
                   previous: Mapping[str, Any] | None = None) -> None:
    """Point the app's probes and hooks at the agent; record the originals on the proxy,
    with those an earlier injection recorded (``previous``: its probes point at the agent
    already, so only its proxy still knows them)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    spec = pod.get("spec") or {}
    proxy = find_proxy(spec)
    if proxy is None:
        return
    chosen = parse_bool(str(annotations.get(REWRITE_ANNOTATION, "")))
    wanted = chosen if chosen is not None else settings.flag(
        "sidecarInjectorWebhook.rewriteAppHTTPProbe")
    if not wanted:
        return
    target = int((settings.mesh.get("defaultConfig") or {}).get("statusPort") or 15020)
    probers = {**app_probers(spec, target), **(previous or {})}
    if probers:
        env = proxy.setdefault("env", [])
        for item in env:
            if item.get("name") == PROBERS_ENV:
                try:
                    existing = json.loads(item.get("value") or "{}")
                except ValueError:
                    existing = {}
                item["value"] = _probers_json({**probers, **existing})
                break
        else:
            env.append({"name": PROBERS_ENV, "value": _probers_json(probers)})
    port = int(str(annotations.get("status.sidecar.istio.io/port") or target))
    for field in ("containers", "initContainers"):
        for container in spec.get(field) or ():
            if container.get("name") != PROXY:
                _point_at_agent(container, port)


def _probers_json(probers: Mapping[str, Any]) -> str:
    return json.dumps(dict(sorted(probers.items())), separators=(",", ":"))


def _urls(container: str) -> dict[str, str]:
    urls = {kind: f"/app-health/{container}/{kind}" for _, kind in _PROBES}
    urls.update({kind: f"/app-lifecycle/{container}/{kind}" for _, kind in _HOOKS})
    return urls


def _prober(action: Mapping[str, Any] | None, timeout: Any = None) -> dict[str, Any] | None:
    """A probe or hook as the agent runs it (Istio's Prober): its action and timeout."""
    if not isinstance(action, Mapping):
        return None
    for kind in ("httpGet", "tcpSocket", "grpc"):
        if isinstance(action.get(kind), Mapping):
            prober: dict[str, Any] = {kind: copy.deepcopy(dict(action[kind]))}
            if timeout:
                prober["timeoutSeconds"] = timeout
            return prober
    return None


def app_probers(spec: Mapping[str, Any], target: int) -> dict[str, Any]:
    """Every app probe and hook the agent takes over, by its URL on the status port: named
    ports resolved, those already pointing at ``target`` left out (rewritten before)."""
    out: dict[str, Any] = {}
    for container in [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]:
        name = str(container.get("name"))
        if name == PROXY:
            continue
        ports = {p["name"]: p["containerPort"] for p in container.get("ports") or ()
                 if p.get("name")}
        urls = _urls(name)
        candidates = [(kind, _prober(container.get(field),
                                     (container.get(field) or {}).get("timeoutSeconds")))
                      for field, kind in _PROBES]
        hooks = container.get("lifecycle") or {}
        candidates += [(kind, _prober(hooks.get(field))) for field, kind in _HOOKS]
        for kind, prober in candidates:
            if prober is not None and _resolve(prober, ports, target):
                out[urls[kind]] = prober
    return out


def _resolve(prober: dict[str, Any], ports: Mapping[str, Any], target: int) -> bool:
    if "grpc" in prober:
        return True
    action = prober.get("httpGet") or prober.get("tcpSocket")
    port = action.get("port") if isinstance(action, dict) else None
    if isinstance(port, str) and not port.isdigit():
        if port not in ports:
            return False
        action["port"] = ports[port]  # type: ignore[index]
        return True
    return port is None or int(port) != target


def _point_at_agent(container: dict[str, Any], port: int) -> None:
    urls = _urls(str(container.get("name")))
    for field, kind in _PROBES:
        probe = container.get(field)
        if isinstance(probe, dict) and _has_action(probe, ("httpGet", "tcpSocket", "grpc")):
            container[field] = _to_http(probe, urls[kind], port)
    hooks = container.get("lifecycle")
    if isinstance(hooks, dict):
        for field, kind in _HOOKS:
            hook = hooks.get(field)
            if isinstance(hook, dict) and _has_action(hook, ("httpGet", "tcpSocket")):
                hooks[field] = _to_http(hook, urls[kind], port)


def _has_action(action: Mapping[str, Any], kinds: tuple[str, ...]) -> bool:
    return any(isinstance(action.get(kind), Mapping) for kind in kinds)


def _to_http(action: dict[str, Any], url: str, port: int) -> dict[str, Any]:
    """The probe or hook as an HTTP GET of ``url`` on the agent's port (the agent speaks
    HTTPS, TCP or gRPC to the app itself)."""
    out = dict(action)
    http = dict(out["httpGet"]) if isinstance(out.get("httpGet"), Mapping) else {}
    out.pop("tcpSocket", None)
    out.pop("grpc", None)
    http["path"] = url
    http["port"] = port
    if http.get("scheme") == "HTTPS":
        http["scheme"] = "HTTP"
    out["httpGet"] = http
    return out


# -- Prometheus ---------------------------------------------------------------------------

def _first(annotations: Mapping[str, str], *names: str) -> str:
    return next((str(annotations[n]) for n in names if annotations.get(n)), "")


def merge_prometheus(pod: dict[str, Any], settings: Settings) -> None:
    """Scrape the agent's merged metrics instead of the app, keeping the app's settings
    for the agent."""
    metadata = pod.setdefault("metadata", {})
    annotations = metadata.setdefault("annotations", {})
    if _first(annotations, "prometheus.io/scrape", "prometheus.io.scrape") == "false":
        return
    chosen = parse_bool(str(annotations.get(MERGE_ANNOTATION, "")))
    mesh_on = settings.mesh.get("enablePrometheusMerge")
    if not (chosen if chosen is not None else mesh_on is None or bool(mesh_on)):
        return
    agent = str((settings.mesh.get("defaultConfig") or {}).get("statusPort") or 15020)
    port = _first(annotations, "prometheus.io/port", "prometheus.io.port")
    if port == agent:
        return  # injected before: the annotations point at the agent already
    scrape = {"scrape": _first(annotations, "prometheus.io/scrape", "prometheus.io.scrape"),
              "path": _first(annotations, "prometheus.io/path", "prometheus.io.path"),
              "port": port}
    targets = _targets(str(annotations.get(TARGETS_ANNOTATION, "")))
    if targets:
        scrape["port"] = scrape["port"] or targets[0]["port"]
        scrape["path"] = scrape["path"] or targets[0]["path"]
    for candidate in [scrape["port"], *(t["port"] for t in targets)]:
        if candidate.isdigit() and int(candidate) in RESERVED_PORTS:
            raise InjectionError(f"annotation prometheus: port {candidate} is reserved for "
                                 "Istio's proxy and agent; scrape the app on another port")
    proxy = find_proxy(pod.get("spec") or {})
    body: dict[str, Any] = {k: v for k, v in scrape.items() if v}
    if targets:
        body["targets"] = targets
    if proxy is not None and body:
        proxy.setdefault("env", []).append(
            {"name": PROMETHEUS_ENV, "value": json.dumps(body, separators=(",", ":"))})
    for name in ("prometheus.io.scrape", "prometheus.io.port", "prometheus.io.path",
                 TARGETS_ANNOTATION):
        annotations.pop(name, None)
    annotations["prometheus.io/port"] = agent
    annotations["prometheus.io/path"] = "/stats/prometheus"
    annotations["prometheus.io/scrape"] = "true"


def _targets(text: str) -> list[dict[str, str]]:
    """``8080:/metrics,9100:/custom`` → the targets; a malformed list is ignored, as
    Istio logs and ignores it."""
    out = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        port, sep, path = item.partition(":")
        if not sep or not port.strip().isdigit() or not path.strip():
            return []
        out.append({"port": port.strip(), "path": path.strip()})
    return out
