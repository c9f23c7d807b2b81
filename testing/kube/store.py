"""The objects, the global resourceVersion and the history watches replay, as etcd keeps
them for kube-apiserver.

One counter numbers every write of every kind (etcd's revision): an object's
``metadata.resourceVersion`` is the revision that wrote it, a list's is the revision it was
read at. The history keeps each change with the object before it, from the last
compaction on: a watch from a revision inside it replays what followed; one from an older
revision gets 410 Gone. A list's later pages are read at its first page's revision, rebuilt
by undoing the changes since, so paging through a changing collection stays consistent
(until a compaction makes the continue token expire, 410 too).

Sans-IO: ``listeners`` are called with each change; the server turns them into watch events.
Stored objects are never mutated: every write stores a new dict.
"""

from __future__ import annotations

import base64
import bisect
import json
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

from pilotfish.testing.kube import errors

Storage = tuple[str, str]  # (group, plural)
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects


@attrs.frozen
class Change:
    revision: int
    type: str  # ADDED, MODIFIED, DELETED
    storage: Storage
    key: Key
    object: dict[str, Any]  # after the change (a deleted object as it was, at `revision`)
    previous: dict[str, Any] | None


def key_of(obj: Mapping[str, Any]) -> Key:
    metadata = obj["metadata"]
    return (metadata.get("namespace") or "", metadata["name"])


class Store:
    def __init__(self, history: int = 100_000) -> None:
        self.revision = 1
        self.compacted = 1  # changes after this revision are kept
        self._history: deque[Change] = deque()
        self._limit = history
        self._objects: dict[Storage, dict[Key, dict[str, Any]]] = {}
        self.listeners: list[Callable[[Change], None]] = []

    def get(self, storage: Storage, key: Key) -> dict[str, Any] | None:
        """The stored object (read-only: copy before changing it)."""
        return self._objects.get(storage, {}).get(key)

    def objects(self, storage: Storage) -> Mapping[Key, dict[str, Any]]:
        return self._objects.get(storage, {})

    def put(self, storage: Storage, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` (created or replaced) at a new revision; returns what was stored."""
        key = key_of(obj)
        previous = self.get(storage, key)
        self.revision += 1
        stored = {**obj, "metadata": {**obj["metadata"],
                                      "resourceVersion": str(self.revision)}}
        self._objects.setdefault(storage, {})[key] = stored
        self._record(Change(self.revision, "ADDED" if previous is None else "MODIFIED",
                            storage, key, stored, previous))
        return stored

    def delete(self, storage: Storage, key: Key) -> dict[str, Any]:
        previous = self._objects[storage].pop(key)
        self.revision += 1
        gone = {**previous, "metadata": {**previous["metadata"],
                                         "resourceVersion": str(self.revision)}}
        self._record(Change(self.revision, "DELETED", storage, key, gone, previous))
        return gone

    def _record(self, change: Change) -> None:
        self._history.append(change)
        while len(self._history) > self._limit:
            self.compacted = self._history.popleft().revision
        for listener in list(self.listeners):
            listener(change)

    def compact(self, revision: int | None = None) -> None:
        """Forget the changes up to ``revision`` (default: all of them), as etcd's
        compaction does: watches and continue tokens from before it get 410 Gone."""
        upto = self.revision if revision is None else min(revision, self.revision)
        while self._history and self._history[0].revision <= upto:
            self._history.popleft()
        self.compacted = max(self.compacted, upto)

    def changes_after(self, revision: int, storage: Storage | None = None) -> Iterator[Change]:
        """The changes since ``revision``; 410 Gone if some were compacted away."""
        if revision < self.compacted:
            raise errors.gone(f"too old resource version: {revision} ({self.compacted})")
        revisions = [change.revision for change in self._history]
        start = bisect.bisect_right(revisions, revision)
        for index in range(start, len(self._history)):
            change = self._history[index]
            if storage is None or change.storage == storage:
                yield change

    def at(self, storage: Storage, revision: int) -> Mapping[Key, dict[str, Any]]:
        """The objects as they were at ``revision`` (410 Gone if compacted away)."""
        current = self.objects(storage)
        undo = list(self.changes_after(revision, storage))
        if not undo:
            return current
        past = dict(current)
        for change in reversed(undo):
            if change.previous is None:
                past.pop(change.key, None)
            else:
                past[change.key] = change.previous
        return past

    def list(self, storage: Storage, namespace: str, keep: Callable[[dict[str, Any]], bool],
             limit: int = 0, token: str = "", revision: int | None = None
             ) -> tuple[list[dict[str, Any]], int, str, int]:
        """(items, revision, continue token, remaining count) of one page, in key order, at
        ``revision`` (default: now) or at the continue token's."""
        start: Key | None = None
        revision = self.revision if revision is None else revision
        if token:
            revision, start = _decode(token)
            if revision < self.compacted:
                raise errors.gone(
                    "The provided continue parameter is too old to display a consistent "
                    "list result. You can start a new list without the continue parameter, "
                    "or use the continue token in this response to retrieve the remainder "
                    "of the results. Continuing with the provided token results in an "
                    "inconsistent list - objects that were created, modified, or deleted "
                    "between the time the first chunk was returned and now may show up in "
                    "the list.")
        objects = self.at(storage, revision)
        keys = sorted(k for k in objects if not namespace or k[0] == namespace)
        if start is not None:
            keys = keys[bisect.bisect_right(keys, start):]
        items: list[dict[str, Any]] = []
        for index, key in enumerate(keys):
            if limit and len(items) == limit:
                remaining = [k for k in keys[index:] if keep(objects[k])]
                if not remaining:
                    break
                return items, revision, _encode(revision, items[-1]), len(remaining)
            if keep(objects[key]):
                items.append(objects[key])
        return items, revision, "", 0


def _encode(revision: int, last: Mapping[str, Any]) -> str:
    # kube-apiserver's token: base64 JSON of the list's revision and the key to go on from.
    start = "/".join(filter(None, key_of(last))) + "\x00"
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": start})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(token: str) -> tuple[int, Key]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        revision, start = int(raw["rv"]), str(raw["start"]).rstrip("\x00")
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.bad_request(f"continue key is not valid: {exc}") from None
    namespace, _, name = start.rpartition("/")
    return revision, (namespace, name)
