"""Kubernetes' strategic merge patch over a Pod, as the injector lays its template on a pod.

Maps merge key by key and ``null`` removes a key. Lists of objects the Pod schema merges by
a key (containers by ``name``, volume mounts by ``mountPath``, ports by ``containerPort``...)
are merged item by item; any other list is replaced. The order is the API server's: items
the patch names keep the patch's order and the ones only the pod has keep theirs, the two
interleaved by where each stood in the pod — so a container the template adds comes before
the pod's own, and one both have stays where the pod had it relative to its neighbours.
``$patch: replace`` on a map replaces it whole; ``$patch: delete`` on a list item removes
the item. Sans-IO: plain JSON-like data in, new data out (the inputs are not changed).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

# Pod fields whose lists merge, and the key that identifies an item (the patchMergeKey of
# the Kubernetes API types; a field name means the same list wherever it occurs in a Pod).
MERGE_KEYS: Mapping[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "env": "name",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "resourceClaims": "name",
}
DIRECTIVE = "$patch"


def merge(original: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``patch`` strategically merged onto ``original``."""
    return _merge_map(original, patch)


def _merge_map(original: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    if patch.get(DIRECTIVE) == "replace":
        return strip_nulls({k: v for k, v in patch.items() if k != DIRECTIVE})
    out = copy.deepcopy(dict(original))
    for key, value in patch.items():
        if key == DIRECTIVE:
            continue
        if value is None:
            out.pop(key, None)
            continue
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            out[key] = _merge_map(current, value)
        elif (isinstance(value, list) and isinstance(current, list) and key in MERGE_KEYS
              and _keyed(current, MERGE_KEYS[key]) and _keyed(value, MERGE_KEYS[key])):
            out[key] = _merge_list(current, value, MERGE_KEYS[key])
        else:
            out[key] = strip_nulls(value)
    return out


def _keyed(items: Sequence[Any], key: str) -> bool:
    return all(isinstance(item, Mapping) and key in item for item in items)


def _merge_list(original: list[Any], patch: list[Any], key: str) -> list[Any]:
    server_order = [item[key] for item in original]
    held = {item[key]: item for item in original}
    deleted = {item[key] for item in patch if item.get(DIRECTIVE) == "delete"}
    patched: list[Any] = []
    named: set[Any] = set()
    for item in patch:
        name = item[key]
        if name in deleted or name in named:
            continue
        named.add(name)
        patched.append(_merge_map(held[name], item) if name in held else strip_nulls(item))
    server_only = [item for item in original if item[key] not in named | deleted]
    return _interleave(server_only, patched, server_order, key)


def _interleave(left: list[Any], right: list[Any], server_order: list[Any], key: str
                ) -> list[Any]:
    """The pod's own items (``left``) and the patch's (``right``), each in its order: a
    pod item goes first only when both stood in the pod and it stood earlier."""
    position = {name: index for index, name in enumerate(server_order)}
    out: list[Any] = []
    i = j = 0
    while i < len(left) or j < len(right):
        if j >= len(right):
            out.append(left[i])
            i += 1
        elif i >= len(left):
            out.append(right[j])
            j += 1
        else:
            li, ri = position.get(left[i][key]), position.get(right[j][key])
            if li is not None and ri is not None and li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out


def strip_nulls(value: Any) -> Any:
    """``value`` without null map entries (what the API types drop)."""
    if isinstance(value, Mapping):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return copy.deepcopy(value)
