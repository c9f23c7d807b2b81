"""Kubernetes Events for objects discovery refused, so that ``kubectl describe`` and
``kubectl get events`` show why the last good version is still the one served.

One Event per version of an object refused (uid and resourceVersion), reason
``InvalidConfig``, type Warning, from ``pilotfish-discovery``; the message is the store's
(field path and the API server's wording). Objects of cluster-scoped kinds get theirs in
``default``, as kubectl looks for them.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from pilotfish.core.store import ConfigError
from pilotfish.plugins.kube.resources import Resource

COMPONENT = "pilotfish-discovery"
REASON = "InvalidConfig"
MAX_MESSAGE = 1024  # Kubernetes refuses Event messages over 1 KiB
REMEMBERED = 10_000  # versions already reported, before the oldest are forgotten


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_for(resource: Resource, raw: Mapping[str, Any], problems: Sequence[ConfigError],
              now: str = "", instance: str = "") -> dict[str, Any]:
    """The Event that says why ``raw`` (as the server sent it) was refused."""
    metadata = raw.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "")
    text = "; ".join(f"{p.field}: {p.message}" if p.field else p.message for p in problems
                     if p.severity == "error")
    message = f"not applied, the last valid version stays in force: {text}"
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE - 3] + "..."
    now = now or _now()
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{metadata.get('name')}.", "namespace": namespace
                     or "default"},
        "involvedObject": {"apiVersion": resource.api_version, "kind": resource.kind,
                           "name": metadata.get("name"), "namespace": namespace,
                           "uid": metadata.get("uid", ""),
                           "resourceVersion": metadata.get("resourceVersion", "")},
        "reason": REASON, "message": message, "type": "Warning",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT, "reportingInstance": instance or socket.gethostname(),
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }


@attrs.define
class Reported:
    """The versions already reported: each refused version gets one Event, however often
    a relist or a resumed watch shows it again."""

    seen: dict[tuple[str, str], None] = attrs.Factory(dict)

    def first_time(self, raw: Mapping[str, Any]) -> bool:
        metadata = raw.get("metadata") or {}
        version = (str(metadata.get("uid") or metadata.get("name")),
                   str(metadata.get("resourceVersion") or ""))
        if version in self.seen:
            return False
        self.seen[version] = None
        if len(self.seen) > REMEMBERED:
            del self.seen[next(iter(self.seen))]
        return True
