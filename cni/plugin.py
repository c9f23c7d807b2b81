"""``pilotfish-cni``: a chained CNI plugin that installs a sidecar pod's traffic capture.

Put it after the pod-network plugin in a conflist. On ADD it enters the pod's network
namespace (``CNI_NETNS``) and installs istio-iptables's rules with Istio CNI's defaults,
derived from the pod's annotations; it prints the previous plugin's result unchanged.
DEL removes the rules (nothing to remove is fine); CHECK fails when they are not exactly
in place. Pods without a sidecar, or opted out, are passed through untouched.

There is no Kubernetes API to ask about the pod, so the runtime passes its facts in the
network config's ``runtimeConfig`` under ``pilotfishPod``. As with any runtime config, the
plugin's entry in the conflist must declare the capability for libcni to hand it over::

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
      "runAsUser": 1337, "runAsGroup": 1337            # the proxy container's ids
    }

Annotations honoured (as Istio CNI does): ``sidecar.istio.io/inject``,
``sidecar.istio.io/interceptionMode`` (REDIRECT, TPROXY; NONE skips the pod),
``traffic.sidecar.istio.io/{include,exclude}Outbound{IPRanges,Ports}``,
``traffic.sidecar.istio.io/{include,exclude}InboundPorts``,
``traffic.sidecar.istio.io/excludeInterfaces``, ``istio.io/reroute-virtual-interfaces``
(and the deprecated ``traffic.sidecar.istio.io/kubevirtInterfaces``),
``status.sidecar.istio.io/port`` (checked), and ``proxy.istio.io/config`` (its
``proxyMetadata`` and ``interceptionMode``, as the injector would apply them). Proxy
environment: ``ISTIO_META_DNS_CAPTURE``, ``INVALID_DROP``, ``ISTIO_DUAL_STACK``,
``DISABLE_ENVOY``. Network-config fields: ``exclude_namespaces`` (a list).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from pilotfish.cni import protocol as cni
from pilotfish.cni.protocol import CniError, CniRequest
from pilotfish.core.interceptor import InterceptorError
from pilotfish.interceptors import iptables
from pilotfish.interceptors.iptables_plan import CapturePlan, plan
from pilotfish.interceptors.netns_exec import Netns
from pilotfish.interceptors.pod_capture import (
    RUNTIME_KEY,
    PodError,
    pod_from_runtime_config,
    settings_for,
    skip_reason,
)

APPLY_FAILED = 100  # the capture rules could not be installed or removed
NOT_IN_PLACE = 101  # CHECK: the installed rules are not the planned ones


def _log(message: str) -> None:
    print(f"pilotfish-cni: {message}", file=sys.stderr)


def _prev_ips(prev: dict[str, Any] | None) -> tuple[str, ...]:
    if not prev:
        return ()
    if isinstance(prev.get("ips"), list):  # results of CNI 0.3.0 and later
        return tuple(str(ip.get("address", "")) for ip in prev["ips"] if isinstance(ip, dict))
    return tuple(str(prev[key]["ip"]) for key in ("ip4", "ip6")  # 0.1.0 / 0.2.0
                 if isinstance(prev.get(key), dict) and "ip" in prev[key])


def capture_for(request: CniRequest) -> CapturePlan | None:
    """The pod's capture plan, or ``None`` when it is not captured (logged why)."""
    raw = request.runtime_config.get(RUNTIME_KEY)
    if raw is None:
        _log(f"no runtimeConfig.{RUNTIME_KEY} (the conflist entry needs "
             f'"capabilities": {{"{RUNTIME_KEY}": true}}): not a pod pilotfish knows')
        return None
    try:
        pod = pod_from_runtime_config(raw, ips=_prev_ips(request.prev_result),
                                      cni_args=request.args)
        excluded = request.config.get("exclude_namespaces", [])
        if not isinstance(excluded, list):
            raise PodError("network config: exclude_namespaces: expected a list of names")
        if pod.namespace in excluded:
            _log(f"pod {pod.key}: namespace excluded")
            return None
        settings = settings_for(pod, os.environ, flavour="cni")
    except (PodError, ValueError) as exc:
        raise CniError(cni.INVALID_CONFIG, str(exc)) from None
    if settings is None:
        _log(f"pod {pod.key}: not captured ({skip_reason(pod)})")
        return None
    return plan(settings)


def _netns(request: CniRequest) -> Netns:
    try:
        return Netns(request.netns)
    except InterceptorError as exc:
        raise CniError(cni.IO_FAILURE, str(exc)) from None


def cmd_add(request: CniRequest) -> dict[str, Any]:
    capture = capture_for(request)
    if capture is not None:
        try:
            iptables.apply(capture, _netns(request))
        except InterceptorError as exc:
            raise CniError(APPLY_FAILED, "installing the capture rules failed",
                           str(exc)) from None
    # Chained: hand the previous plugin's result on untouched.
    return request.prev_result or {"cniVersion": request.cni_version}


def cmd_del(request: CniRequest) -> None:
    if not request.netns or not os.path.exists(request.netns):
        return None  # the namespace is gone, and our rules with it
    try:
        capture = capture_for(request)
    except CniError as exc:  # DEL must not fail on config it cannot read: remove all ours
        _log(f"{exc.msg}; removing every ISTIO chain")
        capture = None
    try:
        iptables.remove(_netns(request), capture)
    except InterceptorError as exc:
        raise CniError(APPLY_FAILED, "removing the capture rules failed", str(exc)) from None
    return None


def cmd_check(request: CniRequest) -> None:
    if request.prev_result is None:
        raise CniError(cni.INVALID_CONFIG, "network config: prevResult: CHECK needs the "
                       "result of ADD")
    capture = capture_for(request)
    if capture is None:
        return None
    try:
        problems = iptables.differences(capture, _netns(request))
    except InterceptorError as exc:
        raise CniError(APPLY_FAILED, "reading the installed rules failed", str(exc)) from None
    if problems:
        raise CniError(NOT_IN_PLACE, "capture rules are not in place", "; ".join(problems))
    return None


HANDLERS: dict[str, cni.Handler] = {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check}


def main() -> int:
    return cni.run(HANDLERS, os.environ, sys.stdin.buffer.read(), sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
