"""Generators (one per proxy kind and xDS type) and the cache that shares each scope's output.

A generator turns a push context and a proxy into protobuf messages of one type URL, for the
proxy kinds it declares (``sidecar``, ``router``, ``grpc``, or a kind of a plugin's own).
Several generators may serve one type URL as long as no two serve the same kind: the
``Generators`` table says which one a proxy gets.

Output depends only on the proxy's `ProxyScope` (its kind included), so the cache keys it by
(type, scope, epoch). Each generator has its own epoch, which moves only when a config kind
the generator depends on changed; a generator serving several kinds shares one epoch and
one memo between them. An endpoints-only change therefore moves the EDS epochs
alone; CDS, LDS and RDS output is reused as is and nothing is sent for those types. Some
output depends on a fact derived from several kinds (CDS on the service accounts behind each
service); the push context reports such facts as pseudo kinds when they changed
(`PushContext.derived_changes`), so a scale-up within known accounts still moves EDS alone.

When endpoints are all that moved a generator's epoch, a generator that can
(`EndpointUpdater`, EDS) brings each scope's last set up to date by regenerating only what
the changed services make, as Istio's incremental EDS does: a one-endpoint change costs a
scope one assignment, not one per service it sees.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from pilotfish.core.proxy import Proxy, ProxyScope
from pilotfish.core.push_context import ENDPOINT_KINDS, PushContext
from pilotfish.core.xds import types
from pilotfish.core.xds.resources import Resource, ResourceSet

log = logging.getLogger("pilotfish.xds")


@runtime_checkable
class Generator(Protocol):
    """What a ``pilotfish.xds`` plugin returns from ``pilotfish_xds_generator``."""

    @property
    def type_url(self) -> str:
        """The xDS type it generates."""
        ...

    @property
    def proxy_kinds(self) -> frozenset[str]:
        """The proxy kinds it serves (``Proxy.kind``): "sidecar", "router", "grpc", ..."""
        ...

    @property
    def depends_on(self) -> frozenset[str] | None:
        """Config kinds whose changes can alter the output; None means "any change"."""
        ...

    def generate(self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]) -> Sequence[Any]:
        """Messages of ``type_url`` for ``proxy``. ``memo`` is shared by every proxy scope
        within one epoch of this generator: keep scope-independent pieces there.

        A generator with a true ``authenticated_only`` attribute (secrets) is asked only for
        proxies whose caller discovery authenticated (``Proxy.verified_identity``); the
        others get nothing of its type."""
        ...


@runtime_checkable
class EndpointUpdater(Protocol):
    """A generator whose output follows service endpoints, able to apply a change of
    endpoints alone service by service (see the module's docstring)."""

    def update_endpoints(self, push: PushContext, proxy: Proxy, memo: dict[Any, Any],
                         hosts: frozenset[str]) -> Sequence[Any]:
        """What `generate` would make for the proxy from the services ``hosts`` only (their
        endpoints changed; nothing else did)."""
        ...


class Patcher(Protocol):
    @property
    def has_patches(self) -> bool: ...

    def patches_apply(self, type_url: str, scope: ProxyScope, push: PushContext) -> bool:
        """Whether some patch may change this type for this scope (else the generated
        messages are served as they are)."""
        ...

    def patch_resources(
        self, type_url: str, scope: ProxyScope, push: PushContext, resources: list[Any]
    ) -> None: ...


class GeneratorConflict(ValueError):
    """Two generators claim the same proxy kind and type URL."""


class GenerationError(Exception):
    """A generator failed for a scope that has nothing older to fall back on: the transport
    sends nothing of that type (the proxy keeps what it has) and the failure is reported."""


@attrs.frozen(order=True)
class GeneratorKey:
    """Names one generator: its type URL and the proxy kinds it serves (unique per table)."""

    type_url: str
    kinds: tuple[str, ...]

    def __str__(self) -> str:
        return f"{','.join(self.kinds)}/{types.short(self.type_url)}"


class Generators:
    """Which generator serves each (proxy kind, type URL). Built once when discovery starts."""

    def __init__(self, entries: Iterable[tuple[str, Generator]] = (),
                 patched_by: Mapping[str, frozenset[str]] | None = None) -> None:
        """``entries``: (who provides it, e.g. the plugin's label, generator) pairs.
        ``patched_by``: per type URL, the config kinds patches of that type follow (see
        `depends_on`)."""
        self.patched_by = dict(patched_by or {})
        self._by_kind: dict[tuple[str, str], tuple[GeneratorKey, Generator]] = {}
        self._generators: dict[GeneratorKey, Generator] = {}
        owners: dict[tuple[str, str], str] = {}
        for owner, generator in entries:
            if not generator.proxy_kinds:
                raise GeneratorConflict(f"{owner}: a {types.short(generator.type_url)} "
                                        "generator that serves no proxy kind")
            key = GeneratorKey(generator.type_url, tuple(sorted(generator.proxy_kinds)))
            for kind in key.kinds:
                slot = (kind, generator.type_url)
                if slot in self._by_kind:
                    raise GeneratorConflict(
                        f"{owners[slot]} and {owner} both generate "
                        f"{types.short(generator.type_url)} for {kind} proxies; remove one "
                        "of them from the mesh config (plugins.xds.remove)")
                self._by_kind[slot] = (key, generator)
                owners[slot] = owner
            self._generators[key] = generator

    @classmethod
    def of(cls, *generators: Generator) -> Generators:
        return cls((type(g).__name__, g) for g in generators)

    def lookup(self, kind: str, type_url: str) -> tuple[GeneratorKey, Generator] | None:
        return self._by_kind.get((kind, type_url))

    def get(self, kind: str, type_url: str) -> Generator | None:
        found = self._by_kind.get((kind, type_url))
        return found[1] if found else None

    def items(self) -> Iterator[tuple[GeneratorKey, Generator]]:
        return iter(sorted(self._generators.items(),
                           key=lambda kv: (types.order_key(kv[0].type_url), kv[0].kinds)))

    def type_urls(self, kind: str | None = None) -> list[str]:
        """The type URLs served (to proxies of ``kind``), in push order."""
        urls = {url for k, url in self._by_kind if kind is None or k == kind}
        return sorted(urls, key=types.order_key)

    def kinds(self) -> list[str]:
        return sorted({kind for kind, _ in self._by_kind})

    def depends_on(self, key: GeneratorKey, generator: Generator) -> frozenset[str] | None:
        """What moves a generator's epoch: its own inputs and those of the patches of its
        type (``pilotfish_patch_depends_on``); None means "any change"."""
        if generator.depends_on is None:
            return None
        return generator.depends_on | self.patched_by.get(key.type_url, frozenset())

    def __len__(self) -> int:
        return len(self._generators)


@attrs.frozen
class PushState:
    """The push context plus each generator's epoch: what generation is keyed on."""

    push: PushContext
    epochs: Mapping[GeneratorKey, int]
    # For a generator whose latest epoch move came from endpoints alone: the hostnames whose
    # endpoints that move changed (`EndpointUpdater`).
    endpoint_updates: Mapping[GeneratorKey, frozenset[str]] = attrs.field(factory=dict)

    def advance(
        self, push: PushContext, changed_kinds: frozenset[str] | None, generators: Generators,
    ) -> PushState:
        """The next state; ``changed_kinds=None`` means everything may have changed."""
        epochs = dict(self.epochs)
        updates = dict(self.endpoint_updates)
        hosts = None
        if changed_kinds is not None:
            # Facts derived from several kinds (the service accounts behind a service) move
            # only the generators that read them, and only when they really changed.
            changed_kinds = changed_kinds | push.derived_changes(self.push, changed_kinds)
            if changed_kinds & ENDPOINT_KINDS:
                hosts = push.endpoint_changes(self.push)
        for key, generator in generators.items():
            depends_on = generators.depends_on(key, generator)
            if changed_kinds is None or depends_on is None or depends_on & changed_kinds:
                epochs[key] = epochs.get(key, 0) + 1
                updates.pop(key, None)
                if (hosts is not None and changed_kinds is not None
                        and depends_on is not None
                        and depends_on & changed_kinds <= ENDPOINT_KINDS):
                    updates[key] = hosts
        return PushState(push, epochs, updates)

    def changed_types(self, previous: PushState) -> list[str]:
        """Type URLs some generator of which moved, in push order."""
        return sorted({key.type_url for key, epoch in self.epochs.items()
                       if previous.epochs.get(key) != epoch}, key=types.order_key)


def _shared(memo: Mapping[Any, Any]) -> set[int]:
    """The messages several scopes share: those a generator keeps in its memo (as values, or
    in tuples there). Only their encodings are kept, so the encodings live as long as the
    memo's messages do; a message made for one scope is encoded and let go with its set
    (kept, messages of scopes that come and go would pile up for the whole epoch)."""
    ids: set[int] = set()
    for value in memo.values():
        ids.update(id(item) for item in (value if isinstance(value, tuple) else (value,)))
    return ids


class GenerationCache:
    """Builds and caches ResourceSets; serialization happens once per distinct resource."""

    def __init__(self, generators: Generators, patcher: Patcher | None = None):
        self.generators = generators
        self._patcher = patcher
        self._sets: dict[tuple[str, ProxyScope, int], ResourceSet] = {}
        # The newest set per (type, scope) and its epoch, to diff its successor against.
        self._latest: dict[tuple[str, ProxyScope], tuple[int, ResourceSet]] = {}
        self._memos: dict[tuple[GeneratorKey, int], dict[Any, Any]] = {}
        # Generations that raised, by (type, scope, epoch), with what was said: reported in
        # /debug/config_errors, and not retried until the epoch moves.
        self.failures: dict[tuple[str, ProxyScope, int], str] = {}
        self.generations = 0  # how many times a generator actually ran (for tests/metrics)
        self.updates = 0  # ... and how many times it updated a scope's set (EndpointUpdater)

    def resources(self, state: PushState, type_url: str, proxy: Proxy) -> ResourceSet:
        found = self.generators.lookup(proxy.kind, type_url)
        if found is None:
            # Nothing serves this type to this kind of proxy: an empty set, never cached,
            # so requests for arbitrary type URLs cannot grow the cache.
            return ResourceSet(type_url, {})
        gkey, generator = found
        if getattr(generator, "authenticated_only", False) and not proxy.verified_identity:
            # Secrets go only to callers discovery authenticated (15012), whatever scope
            # they share with a plaintext one.
            return ResourceSet(type_url, {})
        epoch = state.epochs.get(gkey, 0)
        key = (type_url, proxy.scope, epoch)
        cached = self._sets.get(key)
        if cached is not None:
            return cached
        latest = self._latest.get((type_url, proxy.scope))
        previous = latest[1] if latest is not None else None
        failed = self.failures.get(key)
        if failed is not None:
            if previous is not None:
                return previous
            raise GenerationError(failed)
        memo = self._memos.setdefault((gkey, epoch), {})
        hosts = state.endpoint_updates.get(gkey)
        try:
            result = None
            if (hosts is not None and latest is not None and latest[0] == epoch - 1
                    and isinstance(generator, EndpointUpdater)):
                result = self._update(state.push, generator, proxy, memo, latest[1], hosts)
            if result is None:
                result = self._build(state.push, generator, proxy, memo)
                if previous is not None:
                    result = result.since(previous)
        except Exception as exc:
            # A generator's bug costs this type for this scope, nothing else: its proxies
            # keep the last good set (or what they hold), and it is reported.
            message = (f"{gkey} failed for {proxy.kind} proxies in namespace "
                       f"{proxy.namespace} ({type(exc).__name__}: {exc}); "
                       + ("the last good config stays in force" if previous is not None
                          else "nothing of this type is sent"))
            log.exception("generation: %s", message)
            self.failures[key] = message
            if previous is not None:
                return previous
            raise GenerationError(message) from exc
        self._sets[key] = result
        self._latest[(type_url, proxy.scope)] = (epoch, result)
        return result

    def _update(
        self, push: PushContext, generator: EndpointUpdater, proxy: Proxy,
        memo: dict[Any, Any], previous: ResourceSet, hosts: frozenset[str],
    ) -> ResourceSet | None:
        """``previous`` with what the services ``hosts`` make now; None when that is not a
        replacement of resources it has (then the scope is generated afresh)."""
        if self._patching(previous.type_url, proxy.scope, push):
            return None
        messages = generator.update_endpoints(push, proxy, memo, hosts)
        resources = self._serialize(messages, previous.type_url, memo)
        if any(r.name not in previous.resources for r in resources):
            return None
        self.updates += 1
        return previous.updated(resources)

    def _build(
        self, push: PushContext, generator: Generator, proxy: Proxy, memo: dict[Any, Any]
    ) -> ResourceSet:
        self.generations += 1
        messages = list(generator.generate(push, proxy, memo))
        type_url = generator.type_url
        if self._patcher is not None and self._patching(type_url, proxy.scope, push):
            # Patches edit in place: give them private copies of shared messages.
            messages = [copy.deepcopy(m) for m in messages]
            self._patcher.patch_resources(type_url, proxy.scope, push, messages)
            return ResourceSet.of(
                type_url,
                (Resource.from_message(types.resource_name(m), type_url, m) for m in messages),
            )
        return ResourceSet.of(type_url, self._serialize(messages, type_url, memo))

    def _patching(self, type_url: str, scope: ProxyScope, push: PushContext) -> bool:
        return (self._patcher is not None and self._patcher.has_patches
                and self._patcher.patches_apply(type_url, scope, push))

    @staticmethod
    def _serialize(messages: Sequence[Any], type_url: str, memo: dict[Any, Any]
                   ) -> list[Resource]:
        """Resources for messages; a message several scopes share (one the memo holds) is
        serialized once per epoch."""
        serialized: dict[int, tuple[Any, Resource]] = memo.setdefault("__serialized__", {})
        shared = _shared(memo)
        out = []
        for message in messages:
            hit = serialized.get(id(message))
            if hit is None or hit[0] is not message:
                resource = Resource.from_message(types.resource_name(message), type_url, message)
                if id(message) in shared:
                    serialized[id(message)] = (message, resource)
            else:
                resource = hit[1]
            out.append(resource)
        return out

    def prune(self, state: PushState) -> None:
        """Forget everything from epochs older than the state's."""
        def current(type_url: str, scope: ProxyScope, epoch: int) -> bool:
            found = self.generators.lookup(scope.kind, type_url)
            return found is not None and state.epochs.get(found[0], 0) == epoch

        self._sets = {k: v for k, v in self._sets.items() if current(*k)}
        self.failures = {k: v for k, v in self.failures.items() if current(*k)}
        self._memos = {k: v for k, v in self._memos.items() if state.epochs.get(k[0], 0) == k[1]}

    def forget(self, scope: ProxyScope) -> None:
        """Drop everything kept for a scope no connected proxy has any more (a proxy that
        comes back regenerates it), so scopes that come and go cannot grow the cache."""
        self._sets = {k: v for k, v in self._sets.items() if k[1] != scope}
        self._latest = {k: v for k, v in self._latest.items() if k[1] != scope}
        self.failures = {k: v for k, v in self.failures.items() if k[1] != scope}

    def statistics(self) -> dict[str, int]:
        return {"sets": len(self._sets), "latest": len(self._latest),
                "encodings": sum(len(memo.get("__serialized__", ())) for memo in
                                 self._memos.values()),
                "generations": self.generations, "updates": self.updates}

