"""Objects from the API server as the store takes them: the same Kubernetes-shaped
`ConfigObject`s the files source makes (a Pod with its labels, ``status.podIP`` and service
account; an EndpointSlice; an Istio resource), so the model reads both alike.

What the model never reads and the cluster rewrites all the time is left out, so that such
writes are not changes (the store compares contents): ``managedFields``, the
``resourceVersion`` (the reflector keeps it), kubectl's last-applied annotation; of a Pod's
status its phase, addresses and condition states (not the containers' statuses and probe
times); of a Node's status its addresses (not the heartbeats); a custom resource's status
(the controller's output, never pilotfish's input).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pilotfish.core.objects import ConfigObject, Source
from pilotfish.plugins.kube.resources import Resource

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_POD_STATUS = ("phase", "podIP", "podIPs", "hostIP", "hostIPs")


def trimmed(resource: Resource, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The object's body as the store keeps it (a new dict; ``raw`` is not changed)."""
    body = {key: value for key, value in raw.items() if key not in ("apiVersion", "kind")}
    metadata = {key: value for key, value in (raw.get("metadata") or {}).items()
                if key not in ("managedFields", "resourceVersion")}
    annotations = metadata.get("annotations")
    if annotations and LAST_APPLIED in annotations:
        metadata["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    status = raw.get("status")
    if resource.custom:
        status = None
    elif resource.kind == "Pod" and isinstance(status, Mapping):
        status = {key: status[key] for key in _POD_STATUS if key in status}
        conditions = [{"type": c.get("type"), "status": c.get("status")}
                      for c in (raw["status"].get("conditions") or ()) if isinstance(c, Mapping)]
        if conditions:
            status["conditions"] = conditions
    elif resource.kind == "Node" and isinstance(status, Mapping):
        status = {"addresses": status["addresses"]} if status.get("addresses") else {}
    body.pop("status", None)
    return {"apiVersion": resource.api_version, "kind": resource.kind, **body,
            "metadata": metadata, **({"status": status} if status else {})}


def to_config_object(resource: Resource, raw: Mapping[str, Any]) -> ConfigObject:
    body = trimmed(resource, raw)
    metadata = body["metadata"]
    return ConfigObject(
        api_version=resource.api_version, kind=resource.kind, name=str(metadata["name"]),
        namespace=str(metadata.get("namespace") or "") if resource.namespaced else "",
        body=body, source=Source(resource.origin))
