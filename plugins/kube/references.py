"""Which Secrets and ConfigMaps config refers to: the only ones the source keeps.

- Secrets: every ``credentialName`` (and ``credentialNames``, ``caCertCredentialName``) of an
  Istio Gateway or DestinationRule, with ``NAME-cacert`` beside each NAME (the CA Istio
  looks for), in any namespace: Istio reads them in the namespace of the proxy that uses
  them, which config does not say; and a Gateway API Gateway's ``certificateRefs``, in the
  namespace they name.
- ConfigMaps: a BackendTLSPolicy's ``caCertificateRefs``, a Gateway API Gateway's
  ``infrastructure.parametersRef``, and the mesh config (``istio`` in the root namespace).

Everything else is only known by name and resourceVersion, so that when config starts
referring to it the source can fetch it (``GET``) rather than list everything again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from pilotfish.core import gateway_api
from pilotfish.core.meshconfig import MESH_CONFIGMAP
from pilotfish.core.objects import ConfigObject
from pilotfish.core.security.credentials import CA_SUFFIX, PREFIX

# The kinds whose objects name Secrets or ConfigMaps: a change to one recomputes `Wanted`.
REFERRING = frozenset({"Gateway", "DestinationRule", "BackendTLSPolicy"})
_CREDENTIAL_FIELDS = ("credentialName", "caCertCredentialName")


@attrs.frozen
class Wanted:
    """The objects of one kind to keep: by name in any namespace, or exactly."""

    names: frozenset[str] = frozenset()
    exact: frozenset[tuple[str, str]] = frozenset()

    def __call__(self, key: tuple[str, str]) -> bool:
        return key[1] in self.names or key in self.exact


def _credential_names(value: Any) -> Iterator[str]:
    """Every credential name anywhere under an Istio spec (servers, traffic policies,
    port-level settings and subsets alike)."""
    if isinstance(value, Mapping):
        for field, item in value.items():
            if field in _CREDENTIAL_FIELDS and isinstance(item, str) and item:
                yield item.removeprefix(PREFIX)
            elif field == "credentialNames" and isinstance(item, list):
                yield from (str(n).removeprefix(PREFIX) for n in item if n)
            else:
                yield from _credential_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from _credential_names(item)


def _refs(refs: Any, namespace: str, kind: str) -> Iterator[tuple[str, str]]:
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, Mapping) and str(ref.get("group") or "") in ("", "core") and \
                str(ref.get("kind") or kind) == kind and ref.get("name"):
            yield (str(ref.get("namespace") or namespace), str(ref["name"]))


def wanted(objects: Iterable[ConfigObject], root_namespace: str) -> dict[str, Wanted]:
    """Kind (``Secret``, ``ConfigMap``) → what config refers to."""
    names: set[str] = set()
    secrets: set[tuple[str, str]] = set()
    configmaps = {(root_namespace, MESH_CONFIGMAP)}
    for obj in objects:
        if obj.kind not in REFERRING:
            continue
        spec = obj.spec
        if obj.group != gateway_api.GROUP:
            for name in _credential_names(spec):
                names |= {name, name + CA_SUFFIX}
        elif obj.kind == "Gateway":
            for listener in spec.get("listeners") or ():
                tls = listener.get("tls") if isinstance(listener, Mapping) else None
                if isinstance(tls, Mapping):
                    secrets.update(_refs(tls.get("certificateRefs"), obj.namespace, "Secret"))
            parameters = (spec.get("infrastructure") or {}).get("parametersRef")
            configmaps.update(_refs([parameters], obj.namespace, "ConfigMap"))
        elif obj.kind == "BackendTLSPolicy":
            configmaps.update(_refs((spec.get("validation") or {}).get("caCertificateRefs"),
                                    obj.namespace, "ConfigMap"))
    return {"Secret": Wanted(frozenset(names), frozenset(secrets)),
            "ConfigMap": Wanted(exact=frozenset(configmaps))}
