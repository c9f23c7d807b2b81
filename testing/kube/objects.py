"""What kube-apiserver's registries do to an object on its way in: the fields the server owns
(uid, creationTimestamp, generation), what a status subresource keeps apart, the names it
accepts, and the status a new CustomResourceDefinition is given.

Sans-IO: the time and the uid are passed in.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from pilotfish.testing.kube import errors
from pilotfish.testing.kube.resources import ResourceType, crd_problems

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

# What a new object's status is, for kinds whose status only the status subresource
# writes (a CR with a status subresource starts without one; a Node keeps what the kubelet
# registered it with).
_STATUS_ON_CREATE: dict[tuple[str, str], dict[str, Any] | None] = {
    ("", "pods"): {"phase": "Pending"},
    ("", "namespaces"): {"phase": "Active"},
    ("", "services"): {"loadBalancer": {}},
}
_KEEPS_STATUS_ON_CREATE = {("", "nodes")}

# Server-owned metadata a client's update cannot change.
_SYSTEM_METADATA = ("uid", "creationTimestamp", "generation", "deletionTimestamp",
                    "deletionGracePeriodSeconds", "selfLink")

NAMESPACE_LABEL = "kubernetes.io/metadata.name"


def on_create(rtype: ResourceType, obj: dict[str, Any], *, uid: str, now: str
              ) -> dict[str, Any]:
    """A new object with the fields the server sets on create."""
    new = copy.deepcopy(obj)
    metadata = new.setdefault("metadata", {})
    for field in _SYSTEM_METADATA:
        metadata.pop(field, None)
    metadata.update(uid=uid, creationTimestamp=now, generation=1)
    if rtype.status and rtype.storage not in _KEEPS_STATUS_ON_CREATE:
        status = _STATUS_ON_CREATE.get(rtype.storage)
        if status is None:
            new.pop("status", None)
        else:
            new["status"] = copy.deepcopy(status)
    _namespace_label(rtype, new)
    if rtype.storage == ("apiextensions.k8s.io", "customresourcedefinitions"):
        new["status"] = crd_status(new)
    return new


def allocate_cluster_ip(service: dict[str, Any], cidr: str, taken: set[str]) -> None:
    """kube-apiserver's ClusterIP allocator: a Service (not ExternalName, not headless)
    created without ``spec.clusterIP`` gets the first free address of the service CIDR,
    in ``clusterIP`` and ``clusterIPs``."""
    spec = service.setdefault("spec", {})
    if not isinstance(spec, dict) or spec.get("type") == "ExternalName":
        return
    if spec.get("clusterIP"):
        if spec["clusterIP"] != "None":
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
        return
    network = ipaddress.ip_network(cidr)
    for address in network.hosts():
        if int(address) - int(network.network_address) < 2 or str(address) in taken:
            continue  # .1 is the API server's own Service (kubernetes.default)
        spec["clusterIP"], spec["clusterIPs"] = str(address), [str(address)]
        return
    raise errors.invalid("Service", str((service.get("metadata") or {}).get("name")), [
        ("spec.clusterIPs", f"Internal error: failed to allocate a serviceIP: range {cidr} "
         "is full")])


def on_update(rtype: ResourceType, old: Mapping[str, Any], obj: Mapping[str, Any],
              subresource: str) -> dict[str, Any]:
    """An updated object: the server's fields carried over, the status (or everything but
    it, for the status subresource) kept from ``old``, the generation moved on when more
    than metadata and status changed."""
    if subresource == "status":
        new = copy.deepcopy(dict(old))
        if "status" in obj:
            new["status"] = copy.deepcopy(obj["status"])
        else:
            new.pop("status", None)
    else:
        new = copy.deepcopy(dict(obj))
        if rtype.status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
    metadata = new.setdefault("metadata", {})
    for field in _SYSTEM_METADATA:
        if field in old["metadata"]:
            metadata[field] = old["metadata"][field]
        else:
            metadata.pop(field, None)
    if _spec(new) != _spec(old):
        metadata["generation"] = int(old["metadata"].get("generation") or 0) + 1
    _namespace_label(rtype, new)
    if rtype.storage == ("apiextensions.k8s.io", "customresourcedefinitions"):
        new["status"] = crd_status(new)
    return new


def _spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _namespace_label(rtype: ResourceType, obj: dict[str, Any]) -> None:
    # kube-apiserver labels every namespace with its own name, for namespaceSelectors.
    if rtype.storage == ("", "namespaces"):
        metadata = obj["metadata"]
        metadata["labels"] = {**(metadata.get("labels") or {}),
                              NAMESPACE_LABEL: metadata["name"]}


def crd_status(crd: Mapping[str, Any]) -> dict[str, Any]:
    """Names accepted and established at once (kube-apiserver's controllers do it within
    moments)."""
    spec = crd["spec"]
    storage = [v["name"] for v in spec.get("versions") or () if v.get("storage")]
    conditions = [{"type": kind, "status": "True", "reason": reason, "message": message,
                   "lastTransitionTime": crd["metadata"]["creationTimestamp"]}
                  for kind, reason, message in (
                      ("NamesAccepted", "NoConflicts", "no conflicts found"),
                      ("Established", "InitialNamesAccepted",
                       "the initial names have been accepted"))]
    return {"conditions": conditions, "acceptedNames": copy.deepcopy(spec["names"]),
            "storedVersions": storage}


def problems(rtype: ResourceType, obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for what kube-apiserver's validation would refuse (names and the
    shape of a CRD; not the kinds' full schemas)."""
    metadata = obj.get("metadata") or {}
    name = metadata.get("name") or ""
    if rtype.storage == ("", "namespaces"):
        pattern, limit, what = _LABEL, 63, "a lowercase RFC 1123 label"
    elif rtype.storage == ("", "services"):
        pattern, limit, what = _DNS1035, 63, "a DNS-1035 label"
    else:
        pattern, limit, what = _SUBDOMAIN, 253, "a lowercase RFC 1123 subdomain"
    found = []
    if not pattern.match(name) or len(name) > limit:
        found.append(("metadata.name", f'Invalid value: "{name}": {what} must consist of '
                      f"lower case alphanumeric characters, '-' (or '.' in a subdomain) "
                      f"and start and end with an alphanumeric character, at most {limit}"))
    labels = metadata.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        found.append(("metadata.labels", "Invalid value: label values must be strings"))
    if rtype.storage == ("apiextensions.k8s.io", "customresourcedefinitions"):
        found += crd_problems(obj)
    return found
