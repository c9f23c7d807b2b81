"""The kinds the fake API server serves, and the discovery documents that list them.

A resource type is one (group, version, plural) URL segment; every version of a kind shares
the stored objects (``storage``), as kube-apiserver keeps one copy per group and resource and
only rewrites ``apiVersion`` on the way out. Custom resources appear when their
CustomResourceDefinition is created and disappear with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

# A pod, a service or a service account comes back from DELETE as itself (with the pod's
# deletionTimestamp while it terminates); the rest answer with a Status, as kube-apiserver's
# registries do.
_RETURNS_DELETED = {"pods", "services", "serviceaccounts"}


@attrs.frozen
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    status: bool = False  # a status subresource: the main resource ignores status, and back
    verbs: tuple[str, ...] = VERBS
    custom: bool = False  # from a CRD: no strategic merge patch, DELETE returns the object

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage(self) -> tuple[str, str]:
        """Where the objects live, whatever version they are read in."""
        return (self.group, self.plural)

    @property
    def group_resource(self) -> str:
        """``pods`` or ``virtualservices.networking.istio.io``, as messages name them."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def returns_deleted(self) -> bool:
        return self.custom or self.plural in _RETURNS_DELETED

    def discovery(self) -> list[dict[str, Any]]:
        """The APIResource entries of this type (and its status subresource)."""
        entry: dict[str, Any] = {"name": self.plural, "singularName": self.singular,
                                 "namespaced": self.namespaced, "kind": self.kind,
                                 "verbs": list(self.verbs)}
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        entries = [entry]
        if self.status:
            entries.append({"name": f"{self.plural}/status", "singularName": "",
                            "namespaced": self.namespaced, "kind": self.kind,
                            "verbs": ["get", "patch", "update"]})
        return entries


def _core(kind: str, plural: str, namespaced: bool = True, *short: str,
          status: bool = False) -> ResourceType:
    return ResourceType("", "v1", kind, plural, kind.lower(), namespaced, short, status)


BUILTIN = (
    _core("Namespace", "namespaces", False, "ns", status=True),
    _core("Service", "services", True, "svc", status=True),
    _core("Pod", "pods", True, "po", status=True),
    _core("Node", "nodes", False, "no", status=True),
    _core("ServiceAccount", "serviceaccounts", True, "sa"),
    _core("Secret", "secrets"),
    _core("ConfigMap", "configmaps", True, "cm"),
    _core("Event", "events", True, "ev"),
    ResourceType("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice",
                 True),
    ResourceType("coordination.k8s.io", "v1", "Lease", "leases", "lease", True),
    # What an install applies (nothing runs them here: a Deployment's status is whatever a
    # test writes through its status subresource, as a controller would).
    ResourceType("apps", "v1", "Deployment", "deployments", "deployment", True, ("deploy",),
                 status=True),
    ResourceType("apps", "v1", "DaemonSet", "daemonsets", "daemonset", True, ("ds",),
                 status=True),
    ResourceType("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets",
                 "poddisruptionbudget", True, ("pdb",), status=True),
    ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles",
                 "clusterrole", False),
    ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding",
                 "clusterrolebindings", "clusterrolebinding", False),
    ResourceType("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings",
                 "rolebinding", True),
    ResourceType("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration",
                 "mutatingwebhookconfigurations", "mutatingwebhookconfiguration", False),
    ResourceType("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration",
                 "validatingwebhookconfigurations", "validatingwebhookconfiguration", False),
    ResourceType("apiextensions.k8s.io", "v1", "CustomResourceDefinition",
                 "customresourcedefinitions", "customresourcedefinition", False,
                 ("crd", "crds"), status=True),
    ResourceType("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", "tokenreview",
                 False, verbs=("create",)),
)

CRDS = BUILTIN[-2]


def from_crd(crd: Mapping[str, Any]) -> list[ResourceType]:
    """The resource types a CustomResourceDefinition serves: one per served version."""
    spec = crd["spec"]
    names = spec["names"]
    return [ResourceType(spec["group"], version["name"], names["kind"], names["plural"],
                         names.get("singular") or names["kind"].lower(),
                         spec.get("scope", "Namespaced") == "Namespaced",
                         tuple(names.get("shortNames") or ()),
                         "status" in (version.get("subresources") or {}), custom=True)
            for version in spec.get("versions") or () if version.get("served", True)]


def crd_problems(crd: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for what kube-apiserver would refuse in a CRD's spec, briefly."""
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        return [("spec", "Required value")]
    problems = []
    names = spec.get("names") or {}
    if not spec.get("group"):
        problems.append(("spec.group", "Required value"))
    for field in ("plural", "kind"):
        if not names.get(field):
            problems.append((f"spec.names.{field}", "Required value"))
    if not spec.get("versions"):
        problems.append(("spec.versions", "Required value: must have exactly one version "
                                          "marked as storage version"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        problems.append(("spec.scope", 'Unsupported value: supported values: "Cluster", '
                                       '"Namespaced"'))
    expected = f"{names.get('plural')}.{spec.get('group')}"
    if (crd.get("metadata") or {}).get("name") != expected:
        problems.append(("metadata.name", f'Invalid value: must be spec.names.plural+"."+'
                                          f'spec.group ({expected})'))
    return problems


class Registry:
    """Every served (group, version, plural), built-ins first, custom ones by their CRD."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._by_crd: dict[str, list[ResourceType]] = {}
        for rtype in BUILTIN:
            self._types[(rtype.group, rtype.version, rtype.plural)] = rtype

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        return next((rtype for rtype in self._types.values()
                     if (rtype.group, rtype.version, rtype.kind) == (group, version, kind)),
                    None)

    def set_crd(self, crd: Mapping[str, Any]) -> None:
        """Serve what the CRD (new or changed) defines, and stop serving what it dropped."""
        self.remove_crd(crd["metadata"]["name"])
        served = from_crd(crd)
        self._by_crd[crd["metadata"]["name"]] = served
        for rtype in served:
            self._types[(rtype.group, rtype.version, rtype.plural)] = rtype

    def remove_crd(self, name: str) -> list[ResourceType]:
        removed = self._by_crd.pop(name, [])
        for rtype in removed:
            self._types.pop((rtype.group, rtype.version, rtype.plural), None)
        return removed

    def types(self) -> Iterable[ResourceType]:
        return self._types.values()

    def group_versions(self) -> dict[str, list[str]]:
        """Group → its versions, preferred (the first a CRD lists, v1 for built-ins) first."""
        groups: dict[str, list[str]] = {}
        for rtype in self._types.values():
            versions = groups.setdefault(rtype.group, [])
            if rtype.version not in versions:
                versions.append(rtype.version)
        return groups

    def api_versions(self, address: str) -> dict[str, Any]:
        """``GET /api``."""
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                "serverAddress": address}]}

    def api_group(self, group: str) -> dict[str, Any] | None:
        """``GET /apis/GROUP``."""
        versions = self.group_versions().get(group)
        if not group or not versions:
            return None
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": entries,
                "preferredVersion": entries[0]}

    def api_group_list(self) -> dict[str, Any]:
        """``GET /apis``."""
        groups = [self.api_group(group) for group in self.group_versions() if group]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def api_resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        """``GET /api/v1`` or ``GET /apis/GROUP/VERSION``."""
        resources = [entry for rtype in self._types.values()
                     if (rtype.group, rtype.version) == (group, version)
                     for entry in rtype.discovery()]
        if not resources:
            return None
        group_version = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                "resources": resources}
