"""The pod events ``pilotfish-cni`` posts to the CNI node agent, both ends (sans-IO).

Istio's CNI plugin does not write an ambient pod's rules itself: it is a short-lived process
run by the container runtime, and the rules must be followed by handing the pod's network
namespace to ztunnel, which only the long-lived node agent can do. So the plugin posts the
pod to the agent over a unix socket (``/var/run/istio-cni/pluginevent.sock``) and waits for
its answer. The bodies are JSON, with Istio's field names where Istio has the field:

- ``POST /cmdadd`` (and ``/enroll``, for a running pod labelled into ambient):
  ``{"Netns": path, "PodName", "PodNamespace", "PodUID", "ServiceAccount", "IPs": ["10.0.0.5/24"],
  "Labels": {...}, "Annotations": {...}, "NamespaceLabels": {...}}``. Istio's plugin sends only
  the first three and IPs (the agent reads the rest from the API server); pilotfish's node runs
  without one, so the plugin sends what it knows. Istio's IPs are objects; here they are
  strings.
- ``POST /cmddel``: ``{"PodUID", "PodName", "PodNamespace", "Netns"}`` (Netns may be empty
  once the namespace is gone).

Every answer is JSON; an error's ``error`` names the field and value at fault.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from pilotfish.core.interceptor import PodFacts

DEFAULT_SOCKET = "/var/run/istio-cni/pluginevent.sock"
ADD, ENROLL, DELETE = "/cmdadd", "/enroll", "/cmddel"


class EventError(ValueError):
    """A malformed event body; the message names the field."""


@attrs.frozen
class PodEvent:
    netns: str
    pod: PodFacts


def add_body(pod: PodFacts, netns: str) -> bytes:
    return json.dumps({
        "Netns": netns, "PodName": pod.name, "PodNamespace": pod.namespace,
        "PodUID": pod.uid, "ServiceAccount": pod.service_account, "IPs": list(pod.ips),
        "Labels": dict(pod.labels), "Annotations": dict(pod.annotations),
        "NamespaceLabels": dict(pod.namespace_labels),
    }).encode()


def delete_body(pod: PodFacts, netns: str) -> bytes:
    return json.dumps({"PodUID": pod.uid, "PodName": pod.name, "PodNamespace": pod.namespace,
                       "Netns": netns}).encode()


def _object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise EventError(f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise EventError(f"the body: expected a JSON object, got {type(value).__name__}")
    return value


def _string(value: Mapping[str, Any], field: str, *, required: bool = True,
            default: str = "") -> str:
    text = value.get(field, default)
    if not isinstance(text, str) or (required and not text):
        raise EventError(f"{field}: expected a non-empty string, got {text!r}"
                         if field in value else f"{field}: missing (a non-empty string)")
    return text


def _strings(value: Mapping[str, Any], field: str) -> dict[str, str]:
    found = value.get(field)
    if found is None:
        return {}
    if not isinstance(found, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in found.items()):
        raise EventError(f"{field}: expected an object mapping strings to strings")
    return dict(found)


def parse_add(body: bytes) -> PodEvent:
    value = _object(body)
    ips = value.get("IPs", [])
    if ips is None:
        ips = []
    if not isinstance(ips, list) or not all(isinstance(ip, str) for ip in ips):
        raise EventError("IPs: expected a list of addresses (strings such as 10.0.0.5/24)")
    pod = PodFacts(
        name=_string(value, "PodName"), namespace=_string(value, "PodNamespace"),
        uid=_string(value, "PodUID"),
        service_account=_string(value, "ServiceAccount", required=False,
                                default="default") or "default",
        ips=tuple(ips), labels=_strings(value, "Labels"),
        annotations=_strings(value, "Annotations"),
        namespace_labels=_strings(value, "NamespaceLabels"),
        sidecar="sidecar.istio.io/status" in _strings(value, "Annotations"),
    )
    return PodEvent(netns=_string(value, "Netns"), pod=pod)


def parse_delete(body: bytes) -> PodEvent:
    value = _object(body)
    pod = PodFacts(name=_string(value, "PodName", required=False) or "unknown",
                   namespace=_string(value, "PodNamespace", required=False) or "unknown",
                   uid=_string(value, "PodUID"))
    return PodEvent(netns=_string(value, "Netns", required=False), pod=pod)
