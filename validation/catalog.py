"""The schema catalog: which kinds have an OpenAPI schema, and the schema of each version.

Three files shipped as package data make it up: ``istio_schemas.json`` and
``gateway_api_schemas.json``, derived from Istio's and the Gateway API's CRDs by
``scripts/gen_crd_schemas.py``, and ``kubernetes_schemas.json``, the core kinds
discovery reads, derived from Kubernetes' OpenAPI by ``scripts/gen_kube_schemas.py``. They
are read once, lazily, on the first lookup; the schemas are plain dicts that the walkers
only read.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import attrs

from pilotfish.core.objects import KindInfo

Schema = dict[str, Any]

_CATALOGS = ("kubernetes_schemas.json", "istio_schemas.json", "gateway_api_schemas.json")


@attrs.frozen
class KindSchemas:
    """Every served version of one kind, each with its schema."""

    info: KindInfo
    schemas: dict[str, Schema]  # version → schema (identical versions share one dict)


@cache
def _load() -> dict[tuple[str, str], KindSchemas]:
    kinds: dict[tuple[str, str], KindSchemas] = {}
    groups = [
        item for name in _CATALOGS for item in json.loads(resources.files(__package__).joinpath(
            name).read_text(encoding="utf-8"))["groups"].items()]
    for group, by_kind in groups:
        for kind, entry in by_kind.items():
            versions = entry["versions"]
            schemas: dict[str, Schema] = {}
            for version, detail in versions.items():
                if not detail.get("served", True):
                    continue
                source = detail.get("schemaOf", version)
                schemas[version] = versions[source]["schema"]
            info = KindInfo(group, kind, tuple(schemas), namespaced=entry["namespaced"])
            kinds[(group, kind)] = KindSchemas(info, schemas)
    return kinds


def lookup(group: str, kind: str) -> KindSchemas | None:
    """The schemas of a kind, or None when the catalog has no such kind."""
    return _load().get((group, kind))


def schema_for(group: str, kind: str, version: str) -> Schema | None:
    """The schema of one served version, or None."""
    found = lookup(group, kind)
    return found.schemas.get(version) if found else None


def kinds() -> list[KindInfo]:
    """Every kind the catalog holds, sorted by group and kind."""
    return [entry.info for _, entry in sorted(_load().items())]
