"""An RFC 6902 JSON patch from one document to another: what a mutating webhook answers.

Maps are compared key by key (``add``, ``remove``, ``replace``); lists of the same length
item by item; a list whose length changed is replaced whole unless it only grew at the
end (then the new items are appended). Keys are escaped as RFC 6901 says (``/`` → ``~1``,
``~`` → ``~0``: annotation names have slashes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def pointer(path: tuple[str | int, ...]) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def create_patch(original: Any, modified: Any) -> list[dict[str, Any]]:
    """The operations that turn ``original`` into ``modified``."""
    ops: list[dict[str, Any]] = []
    _diff(original, modified, (), ops)
    return ops


def _diff(old: Any, new: Any, path: tuple[str | int, ...], ops: list[dict[str, Any]]) -> None:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": pointer((*path, key))})
        for key, value in new.items():
            if key not in old:
                ops.append({"op": "add", "path": pointer((*path, key)), "value": value})
            else:
                _diff(old[key], value, (*path, key), ops)
        return
    if isinstance(old, list) and isinstance(new, list) and (
            len(old) == len(new) or (len(new) > len(old) and new[:len(old)] == old)):
        for index in range(len(old)):
            _diff(old[index], new[index], (*path, index), ops)
        for index in range(len(old), len(new)):
            ops.append({"op": "add", "path": pointer((*path, "-")), "value": new[index]})
        return
    if old != new or type(old) is not type(new):
        ops.append({"op": "replace", "path": pointer(path), "value": new})
