"""Watches: the events each open watch is sent, from a resourceVersion on.

A watch without a version starts with the objects as they are (ADDED each); one with a
version replays the changes since (410 Gone, as an ERROR event, when they are no longer
kept), then streams new ones as they are written. Selectors apply to each side of a change:
an object that stops matching is DELETED for the watch. A watch that allowed bookmarks gets
a BOOKMARK with the current resourceVersion after each ``bookmark_interval`` of quiet and
whenever the test asks. Events queue per watch, up to ``WATCH_BUFFER``; a watch that falls
further behind is ended (its client watches again from the last version it saw), as
kube-apiserver ends slow watchers. A watch whose client went away is noticed when the next
event or bookmark is written to it; until then it still counts as open.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio

from pilotfish.testing.kube import errors, selectors
from pilotfish.testing.kube.resources import ResourceType
from pilotfish.testing.kube.store import Change, Store

WATCH_BUFFER = 10_000


def true(value: str | None) -> bool:
    """A query flag as clients send it (``true``, ``1``, ``True``)."""
    return (value or "").lower() in ("1", "true")


def revision(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise errors.bad_request(f'invalid resource version "{text}"') from None


def line(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


class Selection:
    """A request's label and field selectors."""

    def __init__(self, rtype: ResourceType, query: Mapping[str, str]) -> None:
        try:
            self.labels = selectors.parse_labels(query.get("labelSelector", ""))
            self.fields = selectors.parse_fields(query.get("fieldSelector", ""), rtype.kind)
        except ValueError as exc:
            raise errors.bad_request(str(exc)) from None

    def selects(self, obj: Mapping[str, Any]) -> bool:
        return (selectors.matches(self.labels, obj["metadata"].get("labels"))
                and selectors.matches(self.fields, selectors.fields_of(obj, self.fields)))


class Watch:
    """One open watch: the events for it queue here until its response sends them."""

    def __init__(self, rtype: ResourceType, namespace: str, selection: Selection,
                 bookmarks: bool) -> None:
        self.rtype, self.namespace, self.selection = rtype, namespace, selection
        self.bookmarks = bookmarks
        self.send, self.receive = anyio.create_memory_object_stream[dict[str, Any]](
            WATCH_BUFFER)
        self.cut = False

    def event(self, change: Change) -> dict[str, Any] | None:
        """The event this watch sees for a change: an object that starts or stops matching
        the selectors is ADDED or DELETED for it."""
        if change.storage != self.rtype.storage or \
                (self.namespace and change.key[0] != self.namespace):
            return None
        was = change.previous is not None and self.selection.selects(change.previous)
        if change.type == "DELETED":
            return self.wrap("DELETED", change.object) if was else None
        now = self.selection.selects(change.object)
        if now:
            return self.wrap("MODIFIED" if was else "ADDED", change.object)
        return self.wrap("DELETED", change.object) if was else None

    def wrap(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        return {"type": kind, "object": {**obj, "apiVersion": self.rtype.api_version}}

    def bookmark(self, revision: int, initial_end: bool = False) -> dict[str, Any]:
        metadata: dict[str, Any] = {"resourceVersion": str(revision)}
        if initial_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK", "object": {"kind": self.rtype.kind,
                                               "apiVersion": self.rtype.api_version,
                                               "metadata": metadata}}

    def offer(self, event: dict[str, Any]) -> None:
        try:
            self.send.send_nowait(event)
        except anyio.WouldBlock:
            self.send.close()  # fallen too far behind: ended, the client watches again
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass


class Watches:
    """The open watches of a store, fed with its changes."""

    def __init__(self, store: Store, bookmark_interval: float) -> None:
        self.store = store
        self.bookmark_interval = bookmark_interval
        self._open: set[Watch] = set()
        store.listeners.append(self._fan_out)

    def __len__(self) -> int:
        return len(self._open)

    def open(self, rtype: ResourceType, namespace: str, query: Mapping[str, str]
             ) -> AsyncIterator[bytes]:
        """The watch a request asks for, as the lines of its response."""
        watch = Watch(rtype, namespace, Selection(rtype, query),
                      true(query.get("allowWatchBookmarks")))
        asked = query.get("resourceVersion", "")
        try:
            if asked in ("", "0"):
                now = self.store.objects(rtype.storage)
                initial = [watch.wrap("ADDED", now[key]) for key in sorted(now)
                           if (not namespace or key[0] == namespace)
                           and watch.selection.selects(now[key])]
            else:
                changes = self.store.changes_after(revision(asked), rtype.storage)
                initial = [event for change in changes if (event := watch.event(change))]
        except errors.ApiError as exc:
            return _lines([{"type": "ERROR", "object": exc.status()}])
        if watch.bookmarks and true(query.get("sendInitialEvents")):
            initial.append(watch.bookmark(self.store.revision, initial_end=True))
        self._open.add(watch)
        return self._events(watch, initial, float(query.get("timeoutSeconds") or 0) or None)

    async def _events(self, watch: Watch, initial: list[dict[str, Any]],
                      timeout: float | None) -> AsyncIterator[bytes]:
        deadline = anyio.current_time() + timeout if timeout else None
        try:
            for replayed in initial:
                yield line(replayed)
            while True:
                now = anyio.current_time()
                if deadline is not None and now >= deadline:
                    return  # the watch's timeoutSeconds: a clean end
                wait = self.bookmark_interval if watch.bookmarks else None
                if deadline is not None:
                    wait = min(wait or deadline - now, deadline - now)
                event: dict[str, Any] | None = None
                with anyio.move_on_after(wait):
                    try:
                        event = await watch.receive.receive()
                    except anyio.EndOfStream:
                        if watch.cut:
                            raise ConnectionAbortedError("watch cut off by the test") from None
                        return  # fell too far behind: ended, as kube-apiserver ends it
                if event is not None:
                    yield line(event)
                elif watch.bookmarks and (deadline is None or anyio.current_time() < deadline):
                    yield line(watch.bookmark(self.store.revision))
        finally:
            self._open.discard(watch)
            watch.send.close()

    def _fan_out(self, change: Change) -> None:
        for watch in list(self._open):
            event = watch.event(change)
            if event is not None:
                watch.offer(event)

    def cut(self) -> int:
        """End every open watch's connection mid-stream; returns how many."""
        for watch in self._open:
            watch.cut = True
            watch.send.close()
        return len(self._open)

    def bookmark(self) -> int:
        """Queue a BOOKMARK at the current version for every watch that allows them."""
        wanting = [watch for watch in self._open if watch.bookmarks]
        for watch in wanting:
            watch.offer(watch.bookmark(self.store.revision))
        return len(wanting)


async def _lines(events: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for event in events:
        yield line(event)
