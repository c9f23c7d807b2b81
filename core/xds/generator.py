"""Generators (one per xDS type) and the cache that makes each scope's output shared.

A generator turns a push context and a proxy into protobuf messages. Output depends only on
the proxy's `ProxyScope`, so the cache keys it by (type, scope, epoch): the epoch of a type
moves only when a config kind the generator depends on changed. An endpoints-only change
therefore moves the EDS epoch alone; CDS, LDS and RDS output is reused as is and nothing is
sent for those types. Some output depends on a fact derived from several kinds (CDS on the
service accounts behind each service); the push context reports such facts as pseudo kinds
when they changed (`PushContext.derived_changes`), so a scale-up within known accounts still
moves EDS alone.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from pilotfish.core.proxy import Proxy, ProxyScope
from pilotfish.core.push_context import PushContext
from pilotfish.core.xds import types
from pilotfish.core.xds.resources import Resource, ResourceSet


class Generator(Protocol):
    """What a ``pilotfish.xds`` plugin returns from ``pilotfish_xds_generator``."""

    type_url: str
    # Config kinds whose changes can alter the output; None means "any change".
    depends_on: frozenset[str] | None

    def generate(self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]) -> Sequence[Any]:
        """Messages of ``type_url`` for ``proxy``. ``memo`` is shared by every proxy scope
        within one epoch of this type: keep scope-independent pieces there."""
        ...


class Patcher(Protocol):
    @property
    def has_patches(self) -> bool: ...

    def patch_resources(
        self, type_url: str, scope: ProxyScope, push: PushContext, resources: list[Any]
    ) -> None: ...


@attrs.frozen
class PushState:
    """The push context plus each type's epoch: what generation is keyed on."""

    push: PushContext
    epochs: Mapping[str, int]

    def advance(
        self, push: PushContext, changed_kinds: frozenset[str] | None,
        generators: Mapping[str, Generator],
    ) -> PushState:
        """The next state; ``changed_kinds=None`` means everything may have changed."""
        epochs = dict(self.epochs)
        if changed_kinds is not None:
            # Facts derived from several kinds (the service accounts behind a service) move
            # only the generators that read them, and only when they really changed.
            changed_kinds = changed_kinds | push.derived_changes(self.push, changed_kinds)
        for url, generator in generators.items():
            if affects(generator, changed_kinds):
                epochs[url] = epochs.get(url, 0) + 1
        return PushState(push, epochs)

    def changed_types(self, previous: PushState) -> list[str]:
        return sorted(
            (url for url, epoch in self.epochs.items() if previous.epochs.get(url) != epoch),
            key=types.order_key,
        )


def affects(generator: Generator, changed_kinds: frozenset[str] | None) -> bool:
    if changed_kinds is None or generator.depends_on is None:
        return True
    return bool(generator.depends_on & changed_kinds)


class GenerationCache:
    """Builds and caches ResourceSets; serialization happens once per distinct resource."""

    def __init__(self, generators: Mapping[str, Generator], patcher: Patcher | None = None):
        self.generators = dict(generators)
        self._patcher = patcher
        self._sets: dict[tuple[str, ProxyScope, int], ResourceSet] = {}
        # The newest set per (type, scope), to diff its successor against.
        self._latest: dict[tuple[str, ProxyScope], ResourceSet] = {}
        self._memos: dict[tuple[str, int], dict[Any, Any]] = {}
        self.generations = 0  # how many times a generator actually ran (for tests/metrics)

    def resources(self, state: PushState, type_url: str, proxy: Proxy) -> ResourceSet:
        epoch = state.epochs.get(type_url, 0)
        key = (type_url, proxy.scope, epoch)
        cached = self._sets.get(key)
        if cached is not None:
            return cached
        generator = self.generators.get(type_url)
        if generator is None:
            result = ResourceSet(type_url, {})
        else:
            memo = self._memos.setdefault((type_url, epoch), {})
            result = self._build(state.push, generator, proxy, memo)
            previous = self._latest.get((type_url, proxy.scope))
            if previous is not None:
                result = result.since(previous)
        self._sets[key] = result
        self._latest[(type_url, proxy.scope)] = result
        return result

    def _build(
        self, push: PushContext, generator: Generator, proxy: Proxy, memo: dict[Any, Any]
    ) -> ResourceSet:
        self.generations += 1
        messages = list(generator.generate(push, proxy, memo))
        type_url = generator.type_url
        if self._patcher is not None and self._patcher.has_patches:
            # Patches edit in place: give them private copies of shared messages.
            messages = [copy.deepcopy(m) for m in messages]
            self._patcher.patch_resources(type_url, proxy.scope, push, messages)
            return ResourceSet.of(
                type_url,
                (Resource.from_message(types.resource_name(m), type_url, m) for m in messages),
            )
        serialized: dict[int, tuple[Any, Resource]] = memo.setdefault("__serialized__", {})
        out = []
        for message in messages:
            hit = serialized.get(id(message))
            if hit is None or hit[0] is not message:
                resource = Resource.from_message(types.resource_name(message), type_url, message)
                serialized[id(message)] = (message, resource)
            else:
                resource = hit[1]
            out.append(resource)
        return ResourceSet.of(type_url, out)

    def prune(self, state: PushState) -> None:
        """Forget everything from epochs older than the state's."""
        self._sets = {k: v for k, v in self._sets.items() if state.epochs.get(k[0], 0) == k[2]}
        self._memos = {k: v for k, v in self._memos.items() if state.epochs.get(k[0], 0) == k[1]}

    def statistics(self) -> dict[str, int]:
        return {"sets": len(self._sets), "generations": self.generations}


def all_kinds(generators: Iterable[Generator]) -> frozenset[str] | None:
    kinds: set[str] = set()
    for generator in generators:
        if generator.depends_on is None:
            return None
        kinds |= generator.depends_on
    return frozenset(kinds)
