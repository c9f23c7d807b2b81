"""List, then watch, one resource (client-go's reflector and its informer's store, sans-IO).

The IO side feeds it list pages and watch events and asks it where to resume; it answers
with `Change`s, only for objects that did change:

- A list (in pages, at one resourceVersion) is compared with what is held: an object whose
  resourceVersion is the one held is not a change, an object held but not listed is
  deleted. A relist that finds everything as it was yields nothing, so nothing downstream
  is rebuilt.
- A watch resumes from the last resourceVersion seen (of an event, a list or a BOOKMARK),
  so a watch cut off mid-stream and opened again loses nothing and repeats nothing.
- A 410 Gone (an ERROR event, or the watch request refused) means the history needed to
  resume is gone: `Gone` is raised and the IO side lists again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects


class Gone(Exception):
    """The resourceVersion to resume from is too old (410): list again."""


class WatchError(Exception):
    """The watch said something that is not an event (an ERROR other than 410)."""


@attrs.frozen
class Change:
    key: Key
    obj: Mapping[str, Any] | None  # the object as the server sent it; None: deleted


def key_of(obj: Mapping[str, Any]) -> Key:
    metadata = obj.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata["name"]))


def version_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def status_code(status: Mapping[str, Any]) -> int:
    try:
        return int(status.get("code") or 0)
    except (TypeError, ValueError):
        return 0


class Reflector:
    def __init__(self) -> None:
        self.resource_version = ""  # where the next watch resumes
        self.versions: dict[Key, str] = {}  # what is held: key → resourceVersion
        self.synced = False  # a list completed once
        self._listed: set[Key] | None = None

    # -- listing -------------------------------------------------------------------------

    def start_list(self) -> None:
        """A list begins (again, after a 410 on a page too): forget what it saw so far."""
        self._listed = set()

    def page(self, items: Iterable[Mapping[str, Any]]) -> list[Change]:
        """One page of the list: the objects that are new or changed."""
        if self._listed is None:
            raise RuntimeError("page() outside a list")
        out = []
        for obj in items:
            key, version = key_of(obj), version_of(obj)
            self._listed.add(key)
            if self.versions.get(key) != version:
                self.versions[key] = version
                out.append(Change(key, obj))
        return out

    def end_list(self, resource_version: str) -> list[Change]:
        """The last page came, at ``resource_version``: what was held and not listed is
        gone."""
        if self._listed is None:
            raise RuntimeError("end_list() outside a list")
        gone = [key for key in self.versions if key not in self._listed]
        for key in gone:
            del self.versions[key]
        self._listed = None
        self.resource_version = resource_version
        self.synced = True
        return [Change(key, None) for key in sorted(gone)]

    # -- watching ------------------------------------------------------------------------

    def watch_query(self, timeout_seconds: int) -> dict[str, str]:
        return {"watch": "true", "resourceVersion": self.resource_version,
                "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds)}

    def event(self, event: Mapping[str, Any]) -> Change | None:
        """One watch event: the change it makes, if any. Raises `Gone` on 410 and
        `WatchError` on another error."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if status_code(obj) == 410:
                raise Gone(str(obj.get("message") or "resourceVersion too old"))
            raise WatchError(f"{obj.get('reason') or 'error'} ({status_code(obj)}): "
                             f"{obj.get('message') or obj}")
        version = version_of(obj)
        if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK") or not version:
            raise WatchError(f"not a watch event: {str(event)[:200]}")
        self.resource_version = version
        if kind == "BOOKMARK":
            return None
        key = key_of(obj)
        if kind == "DELETED":
            return Change(key, None) if self.versions.pop(key, None) is not None else None
        if self.versions.get(key) == version:
            return None  # held already (a replay after a resume)
        self.versions[key] = version
        return Change(key, obj)
