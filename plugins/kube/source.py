"""The ``kubernetes`` config source: a cluster's objects, listed and watched into the store.

Selected by ``pilotfish discovery --kubeconfig PATH [--context C]``, or in a pod (the
in-cluster config) when no ``--config-dir`` is given. It reads what istiod reads:
Namespaces, Nodes (topology labels), Services, EndpointSlices, Pods, ServiceAccounts, the
Secrets and ConfigMaps config refers to (`references`; the ``istio`` ConfigMap of the root
namespace among them: the mesh config), and every kind the store accepts that a CRD
serves (Istio's, the Gateway API's, plugins').

Each resource is listed in pages, then watched from the list's resourceVersion
(`reflector`), with bookmarks; a watch that ends or breaks resumes where it stopped, a 410
Gone lists again, and failures are retried with jittered, capped backoff (client-go's:
0.8 s doubling to 30 s). Only what changed reaches the store, so a relist or a resumed
watch that finds nothing new rebuilds nothing. Objects go through the store's validation,
as files do; a refused object is logged, gets a Kubernetes Event (`events`), and its last
good version stays in force.

CRDs are watched too: a kind whose CRD is not installed is skipped with one warning and
watched from the moment its CRD appears; a CRD removed takes its objects with it.

The client is blocking, so requests run in worker threads, at most ``THREADS`` at a time
(an open watch holds one); an open watch's read is interrupted when the source stops.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from pilotfish.core.backoff import Backoff
from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.objects import ConfigKey, KindInfo
from pilotfish.core.sources import SourceSettings
from pilotfish.core.store import Checked, ConfigError, ConfigStore, StoreUpdate
from pilotfish.plugins.kube import client as kube_client
from pilotfish.plugins.kube import events, references
from pilotfish.plugins.kube.client import ApiError, Client
from pilotfish.plugins.kube.objects import to_config_object
from pilotfish.plugins.kube.reflector import Change, Gone, Key, Reflector, WatchError
from pilotfish.plugins.kube.resources import (
    BUILTIN,
    CRDS,
    Resource,
    crd_serves,
    custom_kinds,
    established,
    from_crd,
    slim_crd,
)

log = logging.getLogger("pilotfish.sources.kubernetes")

PAGE = 500  # objects per list page (client-go's)
WATCH_TIMEOUT = (300, 600)  # seconds a watch asks to last: drawn, as client-go does
THREADS = 64
EVENT_QUEUE = 256  # Events waiting to be posted; more are dropped (and counted)


def _backoff() -> Backoff:
    return Backoff(initial=0.8, maximum=30.0, multiplier=2.0, randomization=0.5)


class _Watcher:
    """One resource: listed, then watched, its changes handed to ``sink``."""

    def __init__(self, source: KubernetesSource, resource: Resource,
                 sink: Callable[[_Watcher, list[Change]], Awaitable[None]]) -> None:
        self.source, self.resource, self.sink = source, resource, sink
        source._watchers[resource.name] = self
        self.reflector = Reflector()
        self.synced = anyio.Event()
        self.lock = anyio.Lock()  # its changes and `references` reach the store in turn
        self.stored: set[Key] = set()  # objects of it the store was given
        self.watching = False  # a watch is open (it may break off)

    async def run(self) -> None:
        name = self.resource.name
        counts = self.source.counts
        backoff = _backoff()
        listing = True
        resumed_at = -1.0  # when a broken watch was last opened again without a wait
        while True:
            self.watching = False
            try:
                if listing:
                    await self._list()
                    listing = False
                    self.synced.set()
                await self._watch()
                backoff.reset()  # it ended on its own (its timeoutSeconds): watch again
                continue
            except Gone as exc:
                reason = str(exc)
            except ApiError as exc:
                counts["errors"] += 1
                if exc.status != 410:
                    now = time.monotonic()
                    if self.watching and now - resumed_at > 1.0:
                        # A watch that was open broke off: resume where it was, at once;
                        # a server that keeps dropping them gets the backoff.
                        log.info("%s: watch broke off (%s); resuming from %s", name, exc,
                                 self.reflector.resource_version)
                        resumed_at = now
                        continue
                    delay = backoff.next(random.random())
                    log.warning("%s: %s; retrying in %.1fs", name, exc, delay)
                    await anyio.sleep(delay)
                    continue
                reason = exc.message
            except Exception as exc:  # a bug, or a server speaking nonsense: this resource
                counts["errors"] += 1  # backs off and tries again; the others go on
                delay = backoff.next(random.random())
                log.warning("%s: %s; retrying in %.1fs", name, exc, delay,
                            exc_info=not isinstance(exc, WatchError))
                await anyio.sleep(delay)
                continue
            counts["relists"] += 1
            log.info("%s: %s; listing again", name, reason)
            listing = True

    async def _list(self) -> None:
        source, resource = self.source, self.resource
        self.reflector.start_list()
        query = {"fieldSelector": resource.field_selector} if resource.field_selector else {}
        token, version = "", ""
        while True:
            page = await source.call("GET", resource.path(), {
                **query, "limit": str(source.page_size), **({"continue": token} if token
                                                             else {})})
            source.counts["pages"] += 1
            metadata = page.get("metadata") or {}
            await self.sink(self, self.reflector.page(page.get("items") or ()))
            token = str(metadata.get("continue") or "")
            version = version or str(metadata.get("resourceVersion") or "")
            if not token:
                break
        source.counts["lists"] += 1
        await self.sink(self, self.reflector.end_list(version))

    async def _watch(self) -> None:
        source = self.source
        timeout = random.randint(*source.watch_timeout)
        watch = await source.thread(source.client.watch, self.resource.path(),
                                    self.reflector.watch_query(timeout))
        source.counts["watches"] += 1
        self.watching = True
        interrupted = False
        try:
            while True:
                try:
                    received = await source.thread(watch.read, abandon=True)
                except anyio.get_cancelled_exc_class():
                    interrupted = True
                    watch.interrupt()
                    raise
                if received is None:
                    return
                changes: list[Change] = []
                try:
                    for event in received:
                        if (change := self.reflector.event(event)) is not None:
                            changes.append(change)
                finally:
                    await self.sink(self, changes)  # what came before a 410 stands
        finally:
            if not interrupted:
                watch.close()


class KubernetesSource:
    name = "kubernetes"

    def __init__(self, kubeconfig: Path | None = None, context: str | None = None, *,
                 root_namespace: str = "istio-system", page_size: int = PAGE,
                 watch_timeout: tuple[int, int] = WATCH_TIMEOUT,
                 extra: Sequence[Resource] = ()) -> None:
        self.kubeconfig, self.context = kubeconfig, context
        self.extra = tuple(extra)  # built-in resources read besides discovery's (a node's)
        self.root_namespace = root_namespace
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.counts: Counter[str] = Counter()
        self._client: Client | None = None
        self._limiter = anyio.CapacityLimiter(THREADS)
        self._store: ConfigStore | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._crds: dict[str, Mapping[str, Any]] = {}
        self._watchers: dict[str, _Watcher] = {}  # by resource name, for statistics
        self._custom: dict[tuple[str, str], tuple[_Watcher, anyio.CancelScope]] = {}
        self._missing: set[tuple[str, str]] = set()
        self._kept: dict[str, _Watcher] = {}  # kind → watcher of Secrets, ConfigMaps
        self._wanted: dict[str, references.Wanted] = {}
        self._references_moved = anyio.Event()
        self._reported = events.Reported()
        self._events_out, self._events_in = anyio.create_memory_object_stream[
            dict[str, Any]](EVENT_QUEUE)

    # -- what tests and /debug may read --------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """Counters (lists, pages, watches, relists, errors, changes, Events posted or
        dropped, objects fetched) and, per resource, how many objects are held (known by
        version) and kept (given to the store)."""
        return {**self.counts, "missing_kinds": sorted(f"{k}.{g}" for g, k in self._missing),
                "held": {name: len(w.reflector.versions) for name, w in
                         sorted(self._watchers.items())},
                "kept": {name: len(w.stored) for name, w in sorted(self._watchers.items())}}

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("the source is not running")
        return self._client

    @property
    def store(self) -> ConfigStore:
        if self._store is None:
            raise RuntimeError("the source is not running")
        return self._store

    async def thread(self, fn: Callable[..., Any], *args: Any, abandon: bool = False) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter,
                                              abandon_on_cancel=abandon)

    async def call(self, method: str, path: str, query: Mapping[str, str] | None = None,
                   body: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.thread(self.client.request, method, path, query,
                                                   body)
        return result

    # -- running -------------------------------------------------------------------------

    async def run(
        self, store: ConfigStore, *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        self._client = await anyio.to_thread.run_sync(lambda: kube_client.load(
            self.kubeconfig, self.context, pool_size=2 * THREADS))
        self._store = store
        store.subscribe(self._store_changed)
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                tg.start_soon(self._post_events)
                crds = _Watcher(self, CRDS, self._crds_changed)
                tg.start_soon(crds.run)
                await crds.synced.wait()
                plain = [_Watcher(self, r, self._feed) for r in (*BUILTIN, *self.extra)
                         if not r.referenced_only]
                for watcher in plain:
                    tg.start_soon(watcher.run)
                for watcher in [*plain, *(w for w, _ in self._custom.values())]:
                    await watcher.synced.wait()
                # Secrets and ConfigMaps once the config that refers to them is in.
                self._wanted = references.wanted(self._referring(), self.root_namespace)
                self._kept = {r.kind: _Watcher(self, r, self._feed) for r in BUILTIN
                              if r.referenced_only}
                for watcher in self._kept.values():
                    tg.start_soon(watcher.run)
                for watcher in self._kept.values():
                    await watcher.synced.wait()
                log.info("synced %d objects from %s (%d custom kinds watched, %d not "
                         "installed)", sum(len(w.stored) for w in self._watchers.values()),
                         self.client.host, len(self._custom), len(self._missing))
                task_status.started()
                tg.start_soon(self._follow_references)
        finally:
            self._client.close()

    # -- store changes -------------------------------------------------------------------

    async def _feed(self, watcher: _Watcher, changes: list[Change]) -> None:
        """Changes of one resource into the store: validated in a worker thread, applied
        on the loop in one batch; refused objects reported."""
        if not changes:
            return
        async with watcher.lock:
            await self._apply(watcher, changes)

    async def _apply(self, watcher: _Watcher, changes: Sequence[Change]) -> None:
        resource = watcher.resource
        latest = {change.key: change for change in changes}
        kept = self._wanted.get(resource.kind) if resource.referenced_only else None
        raws = [c.obj for c in latest.values() if c.obj is not None and (kept is None
                                                                        or kept(c.key))]
        checked = await self.thread(self._check, resource, raws) if raws else {}
        batch: list[tuple[ConfigKey, Checked | None]] = []
        for key in latest:
            config_key = ConfigKey(resource.kind, key[0], key[1])
            if key in checked:
                batch.append((config_key, checked[key][1]))
                watcher.stored.add(key)
            else:
                batch.append((config_key, None))  # deleted, or no longer referred to
                watcher.stored.discard(key)
        self.counts["changes"] += len(batch)
        self.store.apply_checked(resource.origin, batch)
        for raw, item in checked.values():
            if not item.ok and any(p.severity == "error" for p in item.problems):
                self._report(resource, raw, item.problems)

    def _check(self, resource: Resource, raws: Sequence[Mapping[str, Any]]
               ) -> dict[Key, tuple[Mapping[str, Any], Checked]]:
        """Trim and validate (worker thread): key → (the object as sent, the verdict)."""
        out: dict[Key, tuple[Mapping[str, Any], Checked]] = {}
        objects = []
        for raw in raws:
            try:
                objects.append((raw, to_config_object(resource, raw)))
            except (KeyError, TypeError, AttributeError) as exc:
                log.warning("%s: an object that cannot be read (%s); ignored",
                            resource.name, exc)
        for (raw, _), item in zip(objects, self.store.check(o for _, o in objects),
                                  strict=True):
            out[(item.obj.namespace, item.obj.name)] = (raw, item)
        return out

    def _report(self, resource: Resource, raw: Mapping[str, Any],
                problems: Sequence[ConfigError]) -> None:
        if not self._reported.first_time(raw):
            return
        try:
            self._events_out.send_nowait(events.event_for(resource, raw, problems))
        except anyio.WouldBlock:
            self.counts["events_dropped"] += 1

    async def _post_events(self) -> None:
        failing = False
        async for body in self._events_in:
            namespace = body["metadata"]["namespace"]
            try:
                await self.call("POST", f"/api/v1/namespaces/{namespace}/events", None, body)
                self.counts["events_posted"] += 1
                failing = False
            except ApiError as exc:
                self.counts["events_failed"] += 1
                if not failing:  # once per run of failures (RBAC, say), not per Event
                    log.warning("cannot post Events (%s); refused objects are still logged "
                                "and listed in /debug/config_errors", exc)
                failing = True

    # -- referenced Secrets and ConfigMaps -----------------------------------------------

    def _referring(self) -> list[Any]:
        return [obj for kind in references.REFERRING for obj in self.store.objects(kind)]

    def _store_changed(self, update: StoreUpdate) -> None:
        if any(key.kind in references.REFERRING for key in update.changed):
            self._references_moved.set()

    async def _follow_references(self) -> None:
        while True:
            await self._references_moved.wait()
            self._references_moved = anyio.Event()
            wanted = references.wanted(self._referring(), self.root_namespace)
            if wanted == self._wanted:
                continue
            self._wanted = wanted
            for watcher in self._kept.values():
                await self._rewant(watcher, wanted[watcher.resource.kind])

    async def _rewant(self, watcher: _Watcher, kept: references.Wanted) -> None:
        """Drop what config no longer refers to; fetch what it now does (known only by
        name and version until now)."""
        resource = watcher.resource
        async with watcher.lock:
            dropped = [key for key in watcher.stored if not kept(key)]
            if dropped:
                await self._apply(watcher, [Change(key, None) for key in dropped])
            for key, version in list(watcher.reflector.versions.items()):
                if key in watcher.stored or not kept(key):
                    continue
                try:
                    raw = await self.call("GET", resource.path(key[0], key[1]))
                except ApiError as exc:
                    log.info("%s %s/%s: %s; the watch will bring it", resource.kind, key[0],
                             key[1], exc)
                    continue
                self.counts["fetched"] += 1
                if watcher.reflector.versions.get(key) == version:  # else the watch was first
                    await self._apply(watcher, [Change(key, raw)])

    # -- CRDs ----------------------------------------------------------------------------

    async def _crds_changed(self, watcher: _Watcher, changes: list[Change]) -> None:
        for change in changes:
            if change.obj is None:
                self._crds.pop(change.key[1], None)
            else:
                self._crds[change.key[1]] = slim_crd(change.obj)
        if watcher.reflector.synced:
            self._reconcile_crds()

    def _reconcile_crds(self) -> None:
        """Watch each custom kind its CRD serves now; stop watching one whose CRD went."""
        serving = {crd_serves(crd): crd for crd in self._crds.values() if established(crd)}
        for info in custom_kinds(self.store.kinds):
            group_kind = (info.group, info.kind)
            crd = serving.get(group_kind)
            resource = from_crd(crd, info) if crd is not None else None
            current = self._custom.get(group_kind)
            if current is not None and current[0].resource == resource:
                continue
            previous = current[0] if current is not None else None
            if current is not None:
                current[1].cancel()
                del self._custom[group_kind]
                del self._watchers[current[0].resource.name]
            if resource is None:
                if previous is not None:
                    self.store.remove(previous.resource.origin)
                self._skip(info, crd)
                continue
            if group_kind in self._missing:
                self._missing.discard(group_kind)
                log.info("%s.%s: CRD installed; watching %s", info.kind, info.group,
                         resource.api_version)
            watcher = _Watcher(self, resource, self._feed)
            if previous is not None:
                # Another version of the same kind (an upgraded CRD): the objects stay in
                # the store, and the new watch's first list says what changed. Versions
                # are not carried over: the old watch may have been stopped mid-batch.
                watcher.stored = set(previous.stored)
                watcher.reflector.versions = dict.fromkeys(previous.stored, "")
            scope = anyio.CancelScope()
            self._custom[group_kind] = (watcher, scope)
            self._limiter.total_tokens = max(THREADS, 2 * len(self._watchers) + 8)
            if self._task_group is not None:
                self._task_group.start_soon(_scoped, scope, watcher.run)

    def _skip(self, info: KindInfo, crd: Mapping[str, Any] | None) -> None:
        group_kind = (info.group, info.kind)
        if group_kind in self._missing:
            return
        self._missing.add(group_kind)
        if crd is None:
            log.warning("%s.%s: no CRD installed; skipped until one is", info.kind,
                        info.group)
        else:
            served = [v.get("name") for v in (crd.get("spec") or {}).get("versions") or ()]
            log.warning("%s.%s: the CRD serves %s, pilotfish reads %s; skipped until it "
                        "serves one of those", info.kind, info.group, ", ".join(map(
                            str, served)), ", ".join(info.versions))


async def _scoped(scope: anyio.CancelScope, run: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await run()


@hookimpl
def pilotfish_config_source(settings: SourceSettings) -> KubernetesSource | None:
    if settings.kubeconfig is None and not settings.in_cluster:
        return None
    return KubernetesSource(settings.kubeconfig, settings.kube_context,
                            root_namespace=settings.root_namespace)
