"""CustomResourceDefinitions for tests: the smallest a cluster would serve a kind from.

No schema (the fake API server validates none, and keeps every field), every version
served, the first one stored. ``for_kinds`` makes one per kind, named as Kubernetes names
them (``virtualservices.networking.istio.io``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pilotfish.core.objects import KindInfo


def plural(kind: str) -> str:
    """Kubernetes' default plural of a kind (``ServiceEntry`` → ``serviceentries``)."""
    lower = kind.lower()
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    if lower.endswith("y") and lower[-2:-1] not in ("a", "e", "i", "o", "u"):
        return lower[:-1] + "ies"
    return lower + "s"


def crd(group: str, kind: str, versions: Sequence[str] = ("v1",), *,
        namespaced: bool = True) -> dict[str, Any]:
    many = plural(kind)
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{many}.{group}"},
        "spec": {"group": group, "scope": "Namespaced" if namespaced else "Cluster",
                 "names": {"plural": many, "singular": kind.lower(), "kind": kind,
                           "listKind": f"{kind}List"},
                 "versions": [{"name": version, "served": True, "storage": index == 0,
                               "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {
                                   "type": "object",
                                   "x-kubernetes-preserve-unknown-fields": True}}}
                              for index, version in enumerate(versions)]},
    }


def for_kinds(kinds: Iterable[KindInfo]) -> list[dict[str, Any]]:
    """One CRD per kind, serving the versions pilotfish reads."""
    return [crd(info.group, info.kind, info.versions, namespaced=info.namespaced)
            for info in kinds]


def install(client: Any, *kinds: str) -> None:
    """Create, through ``client`` (a ``kubernetes.client.ApiClient``), the CRDs of the
    custom kinds pilotfish reads: all of them, or the kinds named."""
    import kubernetes

    from pilotfish.plugins.kube.resources import custom_kinds
    from pilotfish.validation import make_kinds

    extensions: Any = kubernetes.client.ApiextensionsV1Api(client)  # takes plain dicts too
    for crd in for_kinds(custom_kinds(make_kinds())):
        if not kinds or crd["spec"]["names"]["kind"] in kinds:
            extensions.create_custom_resource_definition(crd)
