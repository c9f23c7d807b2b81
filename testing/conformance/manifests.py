"""The suite's manifests as the Go ``Applier`` prepares them (``utils/kubernetes/apply.go``).

Before anything is created, a GatewayClass gets the controller under test as
``spec.controllerName``, a Gateway the class under test as ``spec.gatewayClassName`` (the
manifests say ``{GATEWAY_CLASS_NAME}``), and a Gateway whose ``spec.addresses`` name the
placeholders ``PLACEHOLDER_USABLE_ADDRS`` / ``PLACEHOLDER_UNUSABLE_ADDRS`` gets the
addresses the suite was given instead: first the ``test/fake-invalid-type`` ones the
manifest has, then the unusable ones, then the usable ones (an address without a type is
an ``IPAddress``). Namespaces get the suite's extra labels and annotations.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

# The suite's corpus beside this checkout (../shared/corpus), as the tests find it.
DEFAULT_SUITE = (Path(__file__).resolve().parents[3] / "shared" / "corpus" / "gateway-api"
                 / "conformance")
BASE_MANIFESTS = "base/manifests.yaml"
MESH_MANIFESTS = "mesh/manifests.yaml"
USABLE = "PLACEHOLDER_USABLE_ADDRS"
UNUSABLE = "PLACEHOLDER_UNUSABLE_ADDRS"
INVALID_ADDRESS_TYPE = "test/fake-invalid-type"


@attrs.frozen
class Address:
    value: str
    type: str = "IPAddress"

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}


@attrs.frozen
class Applier:
    """What the Go Applier is configured with."""

    gateway_class: str = "istio"
    controller_name: str = "istio.io/gateway-controller"
    usable_addresses: Sequence[Address] = ()
    unusable_addresses: Sequence[Address] = ()
    namespace_labels: Mapping[str, str] = attrs.field(factory=dict)
    namespace_annotations: Mapping[str, str] = attrs.field(factory=dict)

    def prepare(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """One object of a manifest, as the Applier would create it."""
        out = copy.deepcopy(dict(document))
        kind = out.get("kind")
        if kind == "GatewayClass":
            out.setdefault("spec", {})["controllerName"] = self.controller_name
        elif kind == "Gateway":
            spec = out.setdefault("spec", {})
            spec["gatewayClassName"] = self.gateway_class
            if spec.get("addresses"):
                spec["addresses"] = self._addresses(spec["addresses"])
        elif kind == "Namespace" and "/" not in str(out.get("apiVersion", "v1")):
            meta = out.setdefault("metadata", {})
            if self.namespace_labels:
                meta["labels"] = {**(meta.get("labels") or {}), **self.namespace_labels}
            if self.namespace_annotations:
                meta["annotations"] = {**(meta.get("annotations") or {}),
                                       **self.namespace_annotations}
        return out

    def _addresses(self, addresses: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
        values = [str(a.get("value") or "") for a in addresses]
        out = [{"type": str(a["type"]), "value": str(a.get("value") or "")}
               for a in addresses if a.get("type") == INVALID_ADDRESS_TYPE]
        if UNUSABLE in values:
            out += [a.as_dict() for a in self.unusable_addresses]
        if USABLE in values:
            out += [a.as_dict() for a in self.usable_addresses]
        return out


def documents(suite: Path, manifest: str) -> Iterator[dict[str, Any]]:
    """The objects of a manifest file (named relative to ``conformance/``)."""
    for document in yaml.safe_load_all((suite / manifest).read_text()):
        if document:
            yield dict(document)
