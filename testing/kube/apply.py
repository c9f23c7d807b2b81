"""Server-side apply and the field ownership it rests on (``metadata.managedFields``).

Every write records which manager set which fields: an apply owns exactly the fields of its
configuration (operation ``Apply``); a create, update or patch owns the fields it changed
(operation ``Update``, taken from whoever held them). An apply that would change a field
another manager owns is refused with a 409 naming each field and manager, unless forced, in
which case the fields change hands. Fields a manager applied before and leaves out now are
removed, unless someone else owns them too.

A field path is a tuple of ``f:NAME`` and ``k:{KEY:VALUE}`` steps, as in ``FieldsV1``; lists
of keyed objects (``patches.MERGE_KEYS``) are associative, every other list is atomic. This
follows kube-apiserver's structured-merge-diff for the shapes tests write, without the
per-type schemas (no ``x-kubernetes-list-type`` from a CRD: the key table decides).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from pilotfish.testing.kube import errors
from pilotfish.testing.kube.patches import merge_key

FieldPath = tuple[str, ...]

# What the server sets, never owned by a manager.
_SYSTEM = {"f:apiVersion", "f:kind"}
_SYSTEM_METADATA = {"f:name", "f:namespace", "f:uid", "f:resourceVersion", "f:generation",
                    "f:creationTimestamp", "f:managedFields", "f:selfLink",
                    "f:deletionTimestamp", "f:deletionGracePeriodSeconds", "f:generateName"}


def _item_token(key: str, item: dict[str, Any]) -> str:
    return "k:" + json.dumps({key: item[key]}, separators=(",", ":"))


def field_paths(obj: Any) -> set[FieldPath]:
    """The leaf paths of an object, less the fields the server sets."""
    paths: set[FieldPath] = set()
    _walk(obj, (), paths)
    return {path for path in paths if not _system(path)}


def _system(path: FieldPath) -> bool:
    return path[0] in _SYSTEM or (path[0] == "f:metadata" and len(path) > 1
                                  and path[1] in _SYSTEM_METADATA)


def _walk(value: Any, prefix: FieldPath, out: set[FieldPath]) -> None:
    if not isinstance(value, dict) or not value:
        if prefix:
            out.add(prefix)
        return
    for name, child in value.items():
        path = (*prefix, f"f:{name}")
        key = merge_key(name, child) if isinstance(child, list) else None
        if key is None:
            _walk(child, path, out)
            continue
        for item in child:
            _walk(item, (*path, _item_token(key, item)), out)


def get(obj: Any, path: FieldPath) -> tuple[bool, Any]:
    """(found, value) at a field path."""
    node = obj
    for token in path:
        if token.startswith("f:") and isinstance(node, dict) and token[2:] in node:
            node = node[token[2:]]
        elif token.startswith("k:") and isinstance(node, list):
            wanted = json.loads(token[2:])
            node = next((item for item in node if isinstance(item, dict)
                         and all(item.get(k) == v for k, v in wanted.items())), _MISSING)
            if node is _MISSING:
                return False, None
        else:
            return False, None
    return True, node


_MISSING = object()


def remove(obj: Any, path: FieldPath) -> None:
    """Remove the field at ``path``, then the list items and maps it leaves empty."""
    token, rest = path[0], path[1:]
    if token.startswith("f:"):
        if not isinstance(obj, dict) or token[2:] not in obj:
            return
        if not rest:
            del obj[token[2:]]
            return
        remove(obj[token[2:]], rest)
        if obj[token[2:]] == {}:
            del obj[token[2:]]
        return
    wanted = json.loads(token[2:])
    if not isinstance(obj, list):
        return
    for index, item in enumerate(obj):
        if isinstance(item, dict) and all(item.get(k) == v for k, v in wanted.items()):
            if rest:
                remove(item, rest)
            if not rest or set(item) <= set(wanted):  # nothing left but its key
                del obj[index]
            return


def to_fields_v1(paths: set[FieldPath]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for token in path:
            node = node.setdefault(token, {})
    return tree


def from_fields_v1(tree: dict[str, Any], prefix: FieldPath = ()) -> set[FieldPath]:
    paths: set[FieldPath] = set()
    children = {k: v for k, v in tree.items() if k != "."}
    if not children:
        return {prefix} if prefix else set()
    for token, subtree in children.items():
        paths |= from_fields_v1(subtree or {}, (*prefix, token))
    return paths


def render(path: FieldPath) -> str:
    """``.spec.containers[name="app"].image``, as conflict messages name fields."""
    text = ""
    for token in path:
        if token.startswith("f:"):
            text += f".{token[2:]}"
        else:
            text += "".join(f"[{k}={json.dumps(v)}]" for k, v in json.loads(token[2:]).items())
    return text


def _related(a: FieldPath, b: FieldPath) -> bool:
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]


class _Ownership:
    """The managedFields entries of an object, as (entry, set of paths)."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.entries = [(dict(entry), from_fields_v1(entry.get("fieldsV1") or {}))
                        for entry in (obj.get("metadata") or {}).get("managedFields") or ()]

    def owned(self, manager: str, operation: str) -> set[FieldPath]:
        return next((paths for entry, paths in self.entries
                     if (entry["manager"], entry["operation"]) == (manager, operation)), set())

    def others(self, manager: str) -> list[tuple[str, set[FieldPath]]]:
        return [(entry["manager"], paths) for entry, paths in self.entries
                if entry["manager"] != manager]

    def assign(self, manager: str, operation: str, paths: set[FieldPath], api_version: str,
               now: str, subresource: str) -> None:
        self.entries = [(e, p) for e, p in self.entries
                        if (e["manager"], e["operation"]) != (manager, operation)]
        entry = {"manager": manager, "operation": operation, "apiVersion": api_version,
                 "time": now, "fieldsType": "FieldsV1"}
        if subresource:
            entry["subresource"] = subresource
        self.entries.append((entry, paths))

    def drop(self, taken: set[FieldPath], except_manager: str) -> None:
        for entry, paths in self.entries:
            if entry["manager"] != except_manager:
                paths -= {p for p in paths if any(_related(p, t) for t in taken)}

    def write(self, obj: dict[str, Any]) -> None:
        entries = []
        for entry, paths in self.entries:
            if paths:
                entries.append({**entry, "fieldsV1": to_fields_v1(paths)})
        metadata = obj.setdefault("metadata", {})
        if entries:
            metadata["managedFields"] = entries
        else:
            metadata.pop("managedFields", None)


Keep = Callable[[FieldPath], bool]


def merge(live: Any, config: Any) -> Any:
    """The applied configuration laid over the live object: maps merge, keyed lists merge
    item by item, anything else is replaced."""
    if not isinstance(config, dict) or not isinstance(live, dict):
        return copy.deepcopy(config)
    out = dict(live)
    for name, value in config.items():
        current = out.get(name)
        if value is None:
            continue
        key = None
        if isinstance(value, list) and isinstance(current, list):
            key = merge_key(name, [*current, *value])
        if key is None or not isinstance(current, list):
            out[name] = merge(current, value)
            continue
        items = list(current)
        for item in value:
            index = next((i for i, old in enumerate(items) if old.get(key) == item[key]), None)
            if index is None:
                items.append(copy.deepcopy(item))
            else:
                items[index] = merge(items[index], item)
        out[name] = items
    return out


def apply(live: dict[str, Any] | None, config: dict[str, Any], manager: str, force: bool,
          *, api_version: str, now: str, keep: Keep, subresource: str = "") -> dict[str, Any]:
    """The object after ``manager`` applies ``config``; raises a 409 ``ApiError`` on
    conflicts unless ``force``."""
    base = copy.deepcopy(live) if live else {}
    ownership = _Ownership(base)
    applied = {path for path in field_paths(config) if keep(path)}
    conflicts: list[tuple[str, FieldPath]] = []
    for other, owned in ownership.others(manager):
        for path in applied:
            for held in owned:
                if not _related(path, held):
                    continue
                shorter = min(path, held, key=len)
                if get(base, shorter) != get(config, shorter):
                    conflicts.append((other, shorter))
    if conflicts and not force:
        raise _conflict_error(conflicts, api_version)
    ownership.drop({path for _, path in conflicts}, manager)
    merged = merge(base, config)
    previous = ownership.owned(manager, "Apply")
    for path in previous - applied:
        if not any(_related(path, held) for _, owned in ownership.others(manager)
                   for held in owned):
            remove(merged, path)
    ownership.assign(manager, "Apply", applied, api_version, now, subresource)
    ownership.write(merged)
    return merged


def record_update(old: dict[str, Any] | None, new: dict[str, Any], manager: str, *,
                  api_version: str, now: str, keep: Keep, subresource: str = "") -> None:
    """Give ``manager`` the fields a create, update or patch changed (in ``new``'s
    managedFields, rebuilt from ``old``'s: a client cannot rewrite them by sending them)."""
    before = old or {}
    ownership = _Ownership(before)
    now_paths = {path for path in field_paths(new) if keep(path)}
    changed = {path for path in now_paths if get(before, path) != get(new, path)}
    removed = {path for path in field_paths(before) if keep(path)} - now_paths
    for _, paths in ownership.entries:
        paths -= {p for p in paths if any(_related(p, t) for t in changed | removed)}
    if changed:
        owned = ownership.owned(manager, "Update") | changed
        ownership.assign(manager, "Update", owned, api_version, now, subresource)
    ownership.write(new)


def _conflict_error(conflicts: list[tuple[str, FieldPath]], api_version: str
                    ) -> errors.ApiError:
    unique = sorted(set(conflicts))
    causes = [{"reason": "FieldManagerConflict",
               "message": f'conflict with "{manager}" using {api_version}',
               "field": render(path)} for manager, path in unique]
    lines = "\n".join(f"- {c['message']}: {c['field']}" for c in causes)
    noun = "conflict" if len(unique) == 1 else "conflicts"
    return errors.ApiError(409, "Conflict", f"Apply failed with {len(unique)} {noun}: {lines}",
                           {"causes": causes})
