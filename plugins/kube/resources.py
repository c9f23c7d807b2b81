"""What the Kubernetes source lists and watches: one `Resource` per (group, version, plural).

Built-in kinds have fixed paths. Every other kind the store accepts (Istio's, the Gateway
API's, a plugin's) is served by a CustomResourceDefinition, so its plural, scope and the
version to read come from the CRD the cluster has installed (`from_crd`): the CRD's storage
version when pilotfish reads it, else the first of the CRD's served versions pilotfish
reads.

Secrets and ConfigMaps are listed and watched whole, but only the ones config refers to are
kept (``referenced_only``; see `references`): a cluster's Secrets are mostly not the mesh's
business, and their data should not sit in discovery's memory. Two kinds of Secret are not
even listed, by field selector: service-account tokens and Helm's release records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from pilotfish.core.objects import KindInfo

# API groups Kubernetes serves itself: never looked for among the CRDs.
BUILTIN_GROUPS = frozenset({
    "", "apps", "batch", "policy", "autoscaling", "discovery.k8s.io", "networking.k8s.io",
    "coordination.k8s.io", "admissionregistration.k8s.io", "apiextensions.k8s.io",
    "rbac.authorization.k8s.io", "storage.k8s.io", "certificates.k8s.io",
    "authentication.k8s.io", "authorization.k8s.io", "events.k8s.io",
})
SECRET_SELECTOR = "type!=kubernetes.io/service-account-token,type!=helm.sh/release.v1"
CRD_GROUP = "apiextensions.k8s.io"


@attrs.frozen
class Resource:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    field_selector: str = ""
    # Listed and watched whole; kept only when config refers to them (`references`).
    referenced_only: bool = False
    custom: bool = False  # served by a CRD: its status is the controller's, not input

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def name(self) -> str:
        """``pods``, ``virtualservices.networking.istio.io``: as Kubernetes names it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def origin(self) -> str:
        """The store origin (and the ``file`` of its objects' errors)."""
        return f"kubernetes:{self.name}"

    def path(self, namespace: str = "", name: str = "") -> str:
        """The collection's path, across namespaces unless one is given; one object's
        with ``name``."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        where = f"/namespaces/{namespace}" if namespace and self.namespaced else ""
        return f"{base}{where}/{self.plural}" + (f"/{name}" if name else "")


def _core(kind: str, plural: str, namespaced: bool = True, **more: Any) -> Resource:
    return Resource("", "v1", kind, plural, namespaced, **more)


BUILTIN: tuple[Resource, ...] = (
    _core("Namespace", "namespaces", False),
    _core("Node", "nodes", False),
    _core("Service", "services"),
    Resource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    _core("Pod", "pods"),
    _core("ServiceAccount", "serviceaccounts"),
    _core("Secret", "secrets", field_selector=SECRET_SELECTOR, referenced_only=True),
    _core("ConfigMap", "configmaps", referenced_only=True),
)
CRDS = Resource(CRD_GROUP, "v1", "CustomResourceDefinition", "customresourcedefinitions",
                False)


def custom_kinds(kinds: Iterable[KindInfo]) -> list[KindInfo]:
    """The kinds a cluster serves through CRDs: every kind the store accepts outside
    Kubernetes' own API groups."""
    return sorted((info for info in kinds if info.group not in BUILTIN_GROUPS),
                  key=lambda info: (info.group, info.kind))


def slim_crd(crd: Mapping[str, Any]) -> dict[str, Any]:
    """What the source needs of a CRD (Istio's carry megabytes of schemas): its group,
    names, scope, versions served and stored, and whether it is established."""
    spec = crd.get("spec") or {}
    return {"spec": {"group": spec.get("group"), "names": spec.get("names") or {},
                     "scope": spec.get("scope"),
                     "versions": [{key: version.get(key) for key in ("name", "served",
                                                                        "storage")}
                                  for version in spec.get("versions") or ()]},
            "status": {"conditions": [
                {"type": c.get("type"), "status": c.get("status")}
                for c in (crd.get("status") or {}).get("conditions") or ()]}}


def crd_serves(crd: Mapping[str, Any]) -> tuple[str, str]:
    """(group, kind) a CRD defines."""
    spec = crd.get("spec") or {}
    return str(spec.get("group") or ""), str((spec.get("names") or {}).get("kind") or "")


def established(crd: Mapping[str, Any]) -> bool:
    """The API server serves the CRD's kind once it says Established."""
    conditions = (crd.get("status") or {}).get("conditions") or ()
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in conditions)


def from_crd(crd: Mapping[str, Any], info: KindInfo) -> Resource | None:
    """What to watch for ``info`` as ``crd`` serves it, or None when the CRD serves no
    version pilotfish reads (an old CRD: its objects would not validate)."""
    spec = crd.get("spec") or {}
    served = [v for v in spec.get("versions") or () if v.get("served", True)]
    names = [str(v.get("name")) for v in served]
    storage = next((str(v.get("name")) for v in served if v.get("storage")), "")
    ours = [v for v in names if v in info.versions]
    if not ours:
        return None
    version = storage if storage in ours else ours[0]
    return Resource(info.group, version, info.kind, str(spec["names"]["plural"]),
                    spec.get("scope", "Namespaced") == "Namespaced", custom=True)
