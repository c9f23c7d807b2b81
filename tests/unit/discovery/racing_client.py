"""A real client to the fake API server that lets someone else write first: the races a
409 Conflict settles, made to happen on cue."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from pilotfish.plugins.kube import client as kube_client


class RacingClient(kube_client.Client):
    """``client``'s connection; ``first`` runs once, just before its first request of one
    of ``methods``."""

    def __init__(self, client: kube_client.Client, first: Callable[[], object],
                 methods: Collection[str] = ("POST", "PUT", "PATCH")) -> None:
        super().__init__(client.api)
        self.first: Callable[[], object] | None = first
        self.methods = methods

    def request(self, method: str, path: str, query: Any = None, body: Any = None,
                content_type: str = "application/json") -> dict[str, Any]:
        if method in self.methods and self.first is not None:
            first, self.first = self.first, None
            first()
        return super().request(method, path, query, body, content_type)
