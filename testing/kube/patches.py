"""PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge
patch, the three ``Content-Type``\\s of a non-apply PATCH.

Strategic merge is merge patch plus Kubernetes' list rules: a list of objects with a merge
key (containers by ``name``, container ports by ``containerPort``, ...) is merged item by
item, and an item ``{"$patch": "delete", KEY: ...}`` removes one. Every other list is
replaced, as kube-apiserver replaces lists without a patch strategy. Server-side apply uses
the same merge keys for its associative lists.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

# Lists of objects merged by a key (the Kubernetes types' patchMergeKey / listMapKeys).
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",), "initContainers": ("name",),
    "ephemeralContainers": ("name",), "volumes": ("name",), "env": ("name",),
    "volumeMounts": ("mountPath",), "imagePullSecrets": ("name",),
    "conditions": ("type",), "ownerReferences": ("uid",), "hostAliases": ("ip",),
    "ports": ("containerPort", "port"),  # a container's ports, a service's ports
    "webhooks": ("name",), "topologySpreadConstraints": ("topologyKey",),
}


class PatchError(ValueError):
    """The patch cannot be applied (the message says where)."""


def merge_key(field: str, items: Sequence[Any]) -> str | None:
    """The key a list under ``field`` is merged by, if it is a list of objects with one."""
    for key in MERGE_KEYS.get(field, ()):
        if items and all(isinstance(item, dict) and key in item for item in items):
            return key
    return None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, ``null`` removes, anything else replaces."""
    return _merge(target, patch, strategic=False)


def strategic_merge(target: Any, patch: Any) -> Any:
    """Merge patch, with lists of keyed objects merged by key (see the module docstring)."""
    return _merge(target, patch, strategic=True)


def _merge(target: Any, patch: Any, strategic: bool) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if strategic and key.startswith("$"):
            continue  # $setElementOrder, $retainKeys: order and pruning hints
        if value is None:
            result.pop(key, None)
        elif strategic and isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(key, result[key], value)
        else:
            result[key] = _merge(result.get(key), value, strategic)
    return result


def _merge_list(field: str, current: list[Any], patch: list[Any]) -> list[Any]:
    name = merge_key(field, [*current, *patch])
    if name is None:
        return copy.deepcopy([item for item in patch if not _directive(item)])
    merged = list(current)
    for item in patch:
        index = next((i for i, old in enumerate(merged) if old[name] == item[name]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(strategic_merge({}, item))
        else:
            merged[index] = strategic_merge(merged[index], item)
    return merged


def _directive(item: Any) -> bool:
    return isinstance(item, dict) and "$patch" in item


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902: add, remove, replace, move, copy, test, in order, on a copy."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch is a list of operations")
    document = copy.deepcopy(target)
    for number, operation in enumerate(operations):
        if not isinstance(operation, dict) or "path" not in operation:
            raise PatchError(f"operation {number}: expected an object with op and path")
        op, path = operation.get("op"), operation["path"]
        if op == "add":
            document = _add(document, path, copy.deepcopy(_value(operation)))
        elif op == "remove":
            document, _ = _remove(document, path)
        elif op == "replace":
            document, _ = _remove(document, path)
            document = _add(document, path, copy.deepcopy(_value(operation)))
        elif op in ("move", "copy"):
            value = _get(document, operation.get("from", ""))
            if op == "move":
                document, value = _remove(document, operation["from"])
            document = _add(document, path, copy.deepcopy(value))
        elif op == "test":
            if _get(document, path) != _value(operation):
                raise PatchError(f"testing value {path} failed")
        else:
            raise PatchError(f"operation {number}: unexpected op {op!r}")
    return document


def _value(operation: Mapping[str, Any]) -> Any:
    if "value" not in operation:
        raise PatchError(f"{operation['op']} {operation['path']}: missing value")
    return operation["value"]


def _tokens(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"{path!r}: a JSON pointer starts with /")
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def _parent(document: Any, path: str) -> tuple[Any, str]:
    tokens = _tokens(path)
    if not tokens:
        raise PatchError("the whole document cannot be the target here")
    node = document
    for token in tokens[:-1]:
        node = _child(node, token, path)
    return node, tokens[-1]


def _child(node: Any, token: str, path: str) -> Any:
    if isinstance(node, dict) and token in node:
        return node[token]
    if isinstance(node, list) and token.isdigit() and int(token) < len(node):
        return node[int(token)]
    raise PatchError(f"{path}: no such member or index {token!r}")


def _get(document: Any, path: str) -> Any:
    node = document
    for token in _tokens(path):
        node = _child(node, token, path)
    return node


def _add(document: Any, path: str, value: Any) -> Any:
    if path == "":
        return value
    parent, token = _parent(document, path)
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        if token == "-":
            parent.append(value)
        elif token.isdigit() and int(token) <= len(parent):
            parent.insert(int(token), value)
        else:
            raise PatchError(f"{path}: index {token!r} out of range")
    else:
        raise PatchError(f"{path}: the parent is not an object or a list")
    return document


def _remove(document: Any, path: str) -> tuple[Any, Any]:
    parent, token = _parent(document, path)
    value = _child(parent, token, path)
    if isinstance(parent, dict):
        del parent[token]
    else:
        del parent[int(token)]
    return document, value
