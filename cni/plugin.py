"""``pilotfish-cni``: a chained CNI plugin that installs a pod's traffic capture.

Put it after the pod-network plugin in a conflist. It loads the interceptors of the active
profile through the plugin manager (the mesh config named by the network config's
``mesh_config``, else the default ``sidecar`` profile, whose interceptor is ``iptables``)
and hands the pod to the first one that captures it. On ADD that interceptor installs the
pod's capture inside its network namespace (``CNI_NETNS``) with Istio CNI's defaults; the
plugin prints the previous plugin's result unchanged. DEL asks every active interceptor to
remove its capture (nothing to remove is fine); CHECK fails when the capture is not
exactly in place. Pods no interceptor captures (no sidecar, opted out) pass untouched.

On a cluster the plugin reads the pod from the API server, as Istio's CNI plugin does: the
runtime passes only its name and namespace (``CNI_ARGS``), and the network config names a
kubeconfig (``"kubernetes": {"kubeconfig": PATH}``; `read_pod`). Without an API server (the
local node reading files), the runtime passes the pod's facts in the network config's
``runtimeConfig`` under ``pilotfishPod``. As with any runtime config, the plugin's entry
in the conflist must declare the capability for libcni to hand it over::

    {"type": "pilotfish-cni", "capabilities": {"pilotfishPod": true}}

and the runtime passes, in its runtimeConfig::

    "pilotfishPod": {
      "name": "reviews-v1", "namespace": "bookinfo",   # default: K8S_POD_NAME/_NAMESPACE
      "annotations": {"traffic.sidecar.istio.io/excludeOutboundPorts": "5432", ...},
      "labels": {"app": "reviews"},
      "sidecar": true,               # has an injected proxy (default: annotation
                                     #   sidecar.istio.io/status is present)
      "containerPorts": [9080],      # optional; Istio captures all inbound ports anyway
      "proxyEnv": {"ISTIO_META_DNS_CAPTURE": "true"},  # the proxy container's env
      "runAsUser": 1337, "runAsGroup": 1337,           # the proxy container's ids
      "uid": "5b9c...",              # default: CNI_ARGS K8S_POD_UID (ambient needs it)
      "serviceAccount": "reviews",   # default: "default"
      "namespaceLabels": {"istio.io/dataplane-mode": "ambient"}  # enrolls the namespace
    }

Ambient pods. With the ``ambient`` profile, the ``ztunnel-sockets`` interceptor takes the
pods ambient mode enrolls (``istio.io/dataplane-mode: ambient`` on the pod or in
``namespaceLabels``; no sidecar) and, as Istio's plugin does, posts each to the CNI node agent
(``pilotfish cni-agent``) instead of writing rules itself: the agent writes the in-pod rules
and hands the pod's network namespace to ztunnel before ADD returns. The agent's socket is
``pluginevent.sock`` in the network config's ``cni_agent_run_dir`` (Istio's field; default
``/var/run/istio-cni``). DEL asks the agent to let the pod go.

Annotations the ``iptables`` interceptor honours (as Istio CNI does): ``sidecar.istio.io/inject``,
``sidecar.istio.io/interceptionMode`` (REDIRECT, TPROXY; NONE skips the pod),
``traffic.sidecar.istio.io/{include,exclude}Outbound{IPRanges,Ports}``,
``traffic.sidecar.istio.io/{include,exclude}InboundPorts``,
``traffic.sidecar.istio.io/excludeInterfaces``, ``istio.io/reroute-virtual-interfaces``
(and the deprecated ``traffic.sidecar.istio.io/kubevirtInterfaces``),
``status.sidecar.istio.io/port`` (checked), and ``proxy.istio.io/config`` (its
``proxyMetadata`` and ``interceptionMode``, as the injector would apply them). Proxy
environment: ``ISTIO_META_DNS_CAPTURE``, ``INVALID_DROP``, ``ISTIO_DUAL_STACK``,
``DISABLE_ENVOY``. Network-config fields: ``exclude_namespaces`` (a list) and
``mesh_config`` (the path of a ``pilotfish.yaml``: profile and plugin choices).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from pilotfish.cni import protocol
from pilotfish.cni.pod import RUNTIME_KEY, PodError, pod_from_object, pod_from_runtime_config
from pilotfish.cni.protocol import CniError, CniRequest
from pilotfish.core.interceptor import (
    Interceptor,
    InterceptorError,
    InterceptorSettings,
    PodFacts,
    first_capturing,
)

# Istio's: the node agent's folder, and its pod-event socket there, which the ambient
# interceptor (ztunnel-sockets) posts pods to; handed to interceptors in their environment.
EVENTS_SOCKET = "pluginevent.sock"
EVENTS_SOCKET_ENV = "PILOTFISH_CNI_EVENTS_SOCKET"
APPLY_FAILED = 100  # the capture could not be installed or removed
NOT_IN_PLACE = 101  # CHECK: the installed capture is not the planned one
API_WAIT = 30.0  # how long a pod not (yet) found, or an API server not answering, is retried
API_RETRY = 0.5


def _log(message: str) -> None:
    print(f"pilotfish-cni: {message}", file=sys.stderr)


def _prev_ips(prev: dict[str, Any] | None) -> tuple[str, ...]:
    if not prev:
        return ()
    if isinstance(prev.get("ips"), list):  # results of CNI 0.3.0 and later
        return tuple(str(ip.get("address", "")) for ip in prev["ips"] if isinstance(ip, dict))
    return tuple(str(prev[key]["ip"]) for key in ("ip4", "ip6")  # 0.1.0 / 0.2.0
                 if isinstance(prev.get(key), dict) and "ip" in prev[key])


def interceptors(request: CniRequest) -> list[Interceptor]:
    """The active profile's interceptors, as the network config's mesh config selects."""
    from pilotfish.core import meshconfig, plugins

    path = request.config.get("mesh_config")
    if path is not None and not isinstance(path, str):
        raise CniError(protocol.INVALID_CONFIG,
                       "network config: mesh_config: expected the path of a pilotfish.yaml")
    environ = dict(os.environ)
    run_dir = request.config.get("cni_agent_run_dir")
    if run_dir is not None:
        if not isinstance(run_dir, str) or not run_dir:
            raise CniError(protocol.INVALID_CONFIG, "network config: cni_agent_run_dir: "
                           "expected the node agent's folder (a path)")
        environ[EVENTS_SOCKET_ENV] = os.path.join(run_dir, EVENTS_SOCKET)
    try:
        active = plugins.Plugins.from_config(meshconfig.load(path), groups=["interceptors"])
        return active.interceptors(InterceptorSettings(runtime="cni", environ=environ))
    except (meshconfig.MeshConfigError, plugins.PluginError) as exc:
        raise CniError(protocol.INVALID_CONFIG, f"network config: mesh_config: {exc}") from None


def pod_facts(request: CniRequest, *, ask_api: bool = True) -> PodFacts | None:
    """The pod the runtime describes (or, with ``kubernetes.kubeconfig`` in the network
    config and ``ask_api``, the API server), or ``None`` when it is not one of ours
    (logged why)."""
    raw = request.runtime_config.get(RUNTIME_KEY)
    kubeconfig = _kubeconfig(request)
    if raw is None and kubeconfig is None:
        _log(f"no runtimeConfig.{RUNTIME_KEY} (the conflist entry needs "
             f'"capabilities": {{"{RUNTIME_KEY}": true}}) and no kubernetes.kubeconfig to '
             "ask the API server with: not a pod pilotfish knows")
        return None
    namespace = request.args.get("K8S_POD_NAMESPACE", "")
    try:
        excluded = request.config.get("exclude_namespaces", [])
        if not isinstance(excluded, list):
            raise PodError("network config: exclude_namespaces: expected a list of names")
        if raw is None and namespace in excluded:
            _log(f"pod {namespace}/{request.args.get('K8S_POD_NAME', '')}: namespace excluded")
            return None
        if raw is None:
            if not ask_api:
                return None
            obj, namespace_labels = read_pod(request, kubeconfig or "")
            pod = pod_from_object(obj, ips=_prev_ips(request.prev_result),
                                  namespace_labels=namespace_labels)
        else:
            pod = pod_from_runtime_config(raw, ips=_prev_ips(request.prev_result),
                                          cni_args=request.args)
    except PodError as exc:
        raise CniError(protocol.INVALID_CONFIG, str(exc)) from None
    if pod.namespace in excluded:
        _log(f"pod {pod.key}: namespace excluded")
        return None
    return pod


def _kubeconfig(request: CniRequest) -> str | None:
    settings = request.config.get("kubernetes")
    if settings is None:
        return None
    path = settings.get("kubeconfig") if isinstance(settings, dict) else None
    if not isinstance(path, str) or not path:
        raise CniError(protocol.INVALID_CONFIG, "network config: kubernetes.kubeconfig: "
                       "expected the path of a kubeconfig")
    return path


def read_pod(request: CniRequest, kubeconfig: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The Pod named by ``K8S_POD_NAMESPACE``/``K8S_POD_NAME`` in CNI_ARGS, from the API
    server; tried again while it is not found or unreachable (the runtime may be quicker
    than the API server's watchers), for ``API_WAIT`` seconds. With it, its namespace's
    labels (ambient mode may enroll a whole namespace), as Istio's plugin reads them; a
    namespace that cannot be read has none."""
    from pathlib import Path

    from pilotfish.plugins.kube import client

    name, namespace = (request.args.get(key, "") for key in ("K8S_POD_NAME",
                                                              "K8S_POD_NAMESPACE"))
    if not name or not namespace:
        raise CniError(protocol.INVALID_CONFIG, "CNI_ARGS: K8S_POD_NAME and "
                       "K8S_POD_NAMESPACE are needed to read the pod from the API server")
    try:
        api = client.load(Path(kubeconfig), pool_size=1)
    except client.ConfigError as exc:
        raise CniError(protocol.INVALID_CONFIG, f"network config: kubernetes.kubeconfig: "
                       f"{exc}") from None
    deadline = time.monotonic() + API_WAIT
    try:
        while True:
            try:
                pod = api.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
                return pod, _namespace_labels(api, namespace)
            except client.ApiError as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise CniError(protocol.TRY_AGAIN_LATER,
                                   f"pod {namespace}/{name}: the API server: {exc}") from None
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise CniError(protocol.TRY_AGAIN_LATER, f"pod {namespace}/{name}: the "
                                   f"API server cannot be reached: {exc}") from None
            time.sleep(API_RETRY)
    finally:
        api.close()


def _namespace_labels(api: Any, namespace: str) -> dict[str, str]:
    from pilotfish.plugins.kube import client

    try:
        found = api.request("GET", f"/api/v1/namespaces/{namespace}")
    except (client.ApiError, OSError) as exc:
        _log(f"namespace {namespace}: not read ({exc}): its labels are taken as none")
        return {}
    labels = (found.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def capture_for(request: CniRequest) -> tuple[Interceptor, PodFacts] | None:
    """The interceptor that captures the pod, with the pod; ``None`` when none does."""
    pod = pod_facts(request)
    if pod is None:
        return None
    active = interceptors(request)
    try:
        chosen = first_capturing(active, pod)
        if chosen is None:
            reasons = "; ".join(f"{i.name}: {i.skip_reason(pod) or 'no plan'}" for i in active)
            _log(f"pod {pod.key}: not captured ({reasons or 'the profile has no interceptor'})")
            return None
    except InterceptorError as exc:
        raise CniError(protocol.INVALID_CONFIG, str(exc)) from None
    return chosen, pod


def _check_netns(request: CniRequest) -> None:
    if not os.path.exists(request.netns):
        raise CniError(protocol.IO_FAILURE, f"CNI_NETNS {request.netns}: no such network "
                       "namespace")


def _run(step: Any, *args: Any) -> Any:
    import anyio  # only once there is capture to touch: VERSION and skipped pods start faster

    return anyio.run(step, *args)


def cmd_add(request: CniRequest) -> dict[str, Any]:
    found = capture_for(request)
    if found is not None:
        interceptor, pod = found
        _check_netns(request)
        try:
            _run(interceptor.apply, pod, request.netns)
        except InterceptorError as exc:
            raise CniError(APPLY_FAILED, "installing the capture rules failed",
                           f"{interceptor.name}: {exc}") from None
    # Chained: hand the previous plugin's result on untouched.
    return request.prev_result or {"cniVersion": request.cni_version}


def cmd_del(request: CniRequest) -> None:
    if not request.netns or not os.path.exists(request.netns):
        return None  # the namespace is gone, and our capture with it
    try:  # not from the API server: the pod may be gone, and DEL must work without it
        pod = pod_facts(request, ask_api=False)
    except CniError as exc:  # DEL must not fail on config it cannot read: remove all ours
        _log(f"{exc.msg}; removing every interceptor's capture")
        pod = None
    if pod is None:  # facts unusable or the pod was excluded later: clean up all the same
        pod = PodFacts(name=request.args.get("K8S_POD_NAME", "unknown"),
                       namespace=request.args.get("K8S_POD_NAMESPACE", "unknown"),
                       uid=request.args.get("K8S_POD_UID", ""))
    for interceptor in interceptors(request):
        try:
            _run(interceptor.remove, pod, request.netns)
        except InterceptorError as exc:
            raise CniError(APPLY_FAILED, "removing the capture rules failed",
                           f"{interceptor.name}: {exc}") from None
    return None


def cmd_check(request: CniRequest) -> None:
    if request.prev_result is None:
        raise CniError(protocol.INVALID_CONFIG, "network config: prevResult: CHECK needs "
                       "the result of ADD")
    found = capture_for(request)
    if found is None:
        return None
    interceptor, pod = found
    _check_netns(request)
    try:
        problems = _run(interceptor.check, pod, request.netns)
    except InterceptorError as exc:
        raise CniError(APPLY_FAILED, "reading the installed rules failed",
                       f"{interceptor.name}: {exc}") from None
    if problems:
        raise CniError(NOT_IN_PLACE, "capture rules are not in place",
                       f"{interceptor.name}: " + "; ".join(problems))
    return None


HANDLERS: dict[str, protocol.Handler] = {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check}


def main() -> int:
    return protocol.run(HANDLERS, os.environ, sys.stdin.buffer.read(), sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
