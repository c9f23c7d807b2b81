"""The Kubernetes API the Go suite's client talks to, played over ``pilotfish up``'s config
folder: an object is a YAML file there, one per object, which the node and discovery
watch.

What an API server would add, this adds: ``creationTimestamp`` on create (whole seconds,
as Kubernetes stores it, which is why the Go tests sleep a second before making an object
that must be newer), ``generation`` 1 on create and one more on every change besides
metadata and status. Updates keep both. Objects are written atomically (a hidden temporary
file, then a rename), so the watchers never read half a file.

Reads go to what was written here, as the Go client reads its own writes; status, which the
file source cannot hold, is read from discovery (``status.py``).
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from .model import PatchOp, ValueFrom

Key = tuple[str, str, str]  # (kind, namespace, name); namespace "" for cluster-scoped kinds


def key_of(document: Mapping[str, Any]) -> Key:
    meta = document.get("metadata") or {}
    return (str(document.get("kind") or ""), str(meta.get("namespace") or ""),
            str(meta.get("name") or ""))


def timestamp(now: float) -> str:
    return datetime.datetime.fromtimestamp(int(now), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NotFound(KeyError):
    pass


@attrs.define
class APIServer:
    """Objects by key, each in its own file under ``root``."""

    root: Path
    clock: Callable[[], float] = time.time
    objects: dict[Key, dict[str, Any]] = attrs.Factory(dict)
    files: dict[Key, Path] = attrs.Factory(dict)

    def get(self, key: Key) -> dict[str, Any]:
        try:
            return copy.deepcopy(self.objects[key])
        except KeyError:
            raise NotFound(key) from None

    def find(self, key: Key) -> dict[str, Any] | None:
        found = self.objects.get(key)
        return copy.deepcopy(found) if found is not None else None

    def apply(self, documents: Iterable[Mapping[str, Any]], folder: str) -> list[Key]:
        """Create each object, or update it when it exists (``MustApplyWithCleanup``)."""
        written = []
        for document in documents:
            key = key_of(document)
            if key in self.objects:
                self.update(document)
            else:
                self.create(document, folder)
            written.append(key)
        return written

    def create(self, document: Mapping[str, Any], folder: str) -> Key:
        key = key_of(document)
        if key in self.objects:
            raise ValueError(f"{key[0]} {key[1]}/{key[2]} already exists")
        obj = copy.deepcopy(dict(document))
        meta = obj.setdefault("metadata", {})
        meta["creationTimestamp"] = timestamp(self.clock())
        meta["generation"] = 1
        if key[0] == "Namespace":  # the API server's label on every namespace (1.22 on)
            meta["labels"] = {**(meta.get("labels") or {}), "kubernetes.io/metadata.name": key[2]}
        obj.pop("status", None)
        self.files[key] = self.root / folder / file_name(key)
        self._store(key, obj)
        return key

    def update(self, document: Mapping[str, Any]) -> None:
        """Replace an object's content, as ``client.Update`` (or a patch) would."""
        key = key_of(document)
        old = self.get(key)
        obj = copy.deepcopy(dict(document))
        obj.pop("status", None)
        meta = obj.setdefault("metadata", {})
        for field in ("creationTimestamp", "generation"):
            meta[field] = old["metadata"][field]
        if _content(obj) != _content(old):
            meta["generation"] = int(old["metadata"]["generation"]) + 1
        self._store(key, obj)

    def patch(self, key: Key, ops: Sequence[PatchOp]) -> dict[str, Any]:
        """JSON Patch operations on the object as read, written back as an update."""
        obj = self.get(key)
        for op in ops:
            apply_op(obj, op, self.resolve)
        self.update(obj)
        return self.get(key)

    def delete(self, key: Key) -> bool:
        if key not in self.objects:
            return False
        del self.objects[key]
        self.files.pop(key).unlink(missing_ok=True)
        return True

    def resolve(self, value: Any) -> Any:
        """A value with every ``ValueFrom`` read from the live object it names."""
        if isinstance(value, ValueFrom):
            obj = self.get((value.kind, *value.object))
            return resolve_pointer(obj, value.pointer)
        if isinstance(value, Mapping):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.resolve(v) for v in value]
        return value

    def _store(self, key: Key, obj: dict[str, Any]) -> None:
        self.objects[key] = obj
        path = self.files[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.safe_dump(obj, sort_keys=False))
        tmp.replace(path)


def file_name(key: Key) -> str:
    """``namespace.kind.name.yaml``; a name too long for a file name is cut and hashed."""
    kind, namespace, name = key
    stem = f"{namespace or '_cluster'}.{kind.lower()}.{name}"
    if len(stem) > 180:
        stem = f"{stem[:160]}-{hashlib.sha256(stem.encode()).hexdigest()[:12]}"
    return f"{stem}.yaml"


def _content(obj: Mapping[str, Any]) -> str:
    """What a generation counts: everything but metadata and status."""
    return json.dumps({k: v for k, v in obj.items() if k not in ("metadata", "status")},
                      sort_keys=True)


def _tokens(pointer: str) -> list[str]:
    if not pointer:
        return []
    if not pointer.startswith("/"):
        raise ValueError(f"bad JSON pointer {pointer!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def resolve_pointer(obj: Any, pointer: str) -> Any:
    for token in _tokens(pointer):
        obj = obj[int(token)] if isinstance(obj, list) else obj[token]
    return obj


def apply_op(obj: dict[str, Any], op: PatchOp, resolve: Callable[[Any], Any]) -> None:
    """One RFC 6902 add/remove/replace on ``obj`` in place (``add`` with ``-`` appends)."""
    tokens = _tokens(op.path)
    if not tokens:
        raise ValueError("cannot patch the whole object")
    parent: Any = obj
    for token in tokens[:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent.setdefault(token, {})
    last = tokens[-1]
    value = copy.deepcopy(resolve(op.value))
    if op.op == "remove":
        if isinstance(parent, list):
            parent.pop(int(last))
        else:
            del parent[last]
    elif op.op == "add":
        if isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else int(last), value)
        else:
            parent[last] = value
    elif op.op == "replace":
        if isinstance(parent, list):
            parent[int(last)] = value
        else:
            if last not in parent:
                raise KeyError(f"replace: {op.path} does not exist")
            parent[last] = value
    else:
        raise ValueError(f"unsupported patch op {op.op!r}")
