"""``pilotfish discovery``: config sources → store → push → translators → xDS (istiod's job).

Wiring only: the store validates and keeps the last good config; every change becomes a
push request; the debouncer batches them; each batch builds a new push context, moves the
epochs of the xDS types it can affect, and tells every connection which types to push.
Connections then ask the generation cache for their scope's resources, and their sessions
decide what (if anything) to send.
"""

from __future__ import annotations

import gc
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import attrs

from pilotfish import analysis
from pilotfish.analysis.base import Finding, Level
from pilotfish.core import meshconfig
from pilotfish.core import push_context as push_context_mod
from pilotfish.core.meshconfig import MeshConfig, MeshSettings
from pilotfish.core.objects import ConfigKey
from pilotfish.core.plugins import Plugins
from pilotfish.core.proxy import Proxy, ProxyScope
from pilotfish.core.push import Debouncer, PushRequest
from pilotfish.core.sources import ConfigSource, SourceSettings
from pilotfish.core.store import ConfigError, ConfigStore, KindRegistry, StoreUpdate, Validator
from pilotfish.core.xds import server as xds_server
from pilotfish.core.xds.generator import GenerationCache, PushState
from pilotfish.core.xds.resources import ResourceSet
from pilotfish.validation import make_kinds, make_validator

if TYPE_CHECKING:
    from pilotfish.core.security.provider import CertSettings
    from pilotfish.discovery.cluster_ca import RootPublisher
    from pilotfish.discovery.gateway_status import StatusWriter
    from pilotfish.discovery.leader import LeaderElection
    from pilotfish.discovery.secure_xds import SecureXds
    from pilotfish.discovery.webhooks import Webhooks
    from pilotfish.plugins.kube.client import Client
log = logging.getLogger("pilotfish.discovery")


@attrs.frozen
class DiscoveryOptions:
    xds_address: str = "127.0.0.1:15010"
    debug_address: str | None = "127.0.0.1:15014"
    sources: SourceSettings = attrs.field(factory=SourceSettings)
    id: str = "discovery"
    # 15012 (TLS: ADS with caller authentication, and the CA); None serves 15010 only.
    secure_xds_address: str | None = None
    certs: CertSettings | None = None  # required with secure_xds_address
    token_key: Path | None = None  # the node's public key for pod tokens
    # 15017: the injection and validation webhooks (TLS from the CA); None: not served.
    webhook_address: str | None = None
    # On a cluster: the root ConfigMaps and webhook caBundles are reconciled on every
    # change their watches see, and this often in any case.
    root_publish_interval: float = 60.0
    # On a cluster: the Leases that let one replica at a time write Gateway API status and
    # the root ConfigMaps (Istio's 30 s; renewed within half, tried every quarter of it).
    lease_duration: float = 30.0
    # The leader writes Gateway API status after each rebuild that changes it, and checks
    # every object's this often in any case.
    status_interval: float = 60.0


@attrs.define
class PushRecord:
    """What the last push did (for /debug/push_status and metrics)."""

    version: str = ""
    at: float = 0.0
    changed_types: tuple[str, ...] = ()
    changed_keys: int = 0
    build_seconds: float = 0.0
    pushes: int = 0


class Discovery:
    def __init__(
        self,
        config: MeshConfig,
        plugins: Plugins,
        options: DiscoveryOptions = DiscoveryOptions(),
        *,
        validator: Validator | None = None,
        kinds: KindRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.plugins = plugins
        self.options = options
        self._clock = clock
        self.store = ConfigStore(
            validator or make_validator(plugins, config.discovery.field_validation),
            kinds or make_kinds(plugins))
        self.generators = plugins.xds_generators()
        self.cache = GenerationCache(self.generators, plugins)
        self._versions = itertools.count(1)
        # The mesh config ConfigMap: its key, the last good settings, the text read last,
        # and what is wrong with that text.
        self._mesh_key = ConfigKey("ConfigMap", config.mesh.root_namespace,
                                   meshconfig.MESH_CONFIGMAP)
        self._mesh: MeshSettings = config.mesh
        self._mesh_text: str | None = None
        self._mesh_problem: ConfigError | None = None
        self.state = PushState(self._build_context(), {})
        self.xds = xds_server.XdsServer(
            self._resources, push_concurrency=config.discovery.push_concurrency,
            limits=config.discovery.xds_limits)
        # Connected proxies per scope: a scope nobody has any more is dropped from the cache.
        self._scopes: dict[ProxyScope, int] = {}
        self.xds.on_connect.append(self._joined)
        self.xds.on_disconnect.append(self._left)
        self.debouncer = Debouncer(config.discovery.debounce_after, config.discovery.debounce_max)
        self._wake = anyio.Event()
        self.last_push = PushRecord()
        self.push_error = ""  # why the latest push failed; "" once one succeeds
        self._reported: frozenset[ConfigError] = frozenset()
        # The analyzers' errors about what is served now (reported, never rejecting).
        self.analysis: tuple[ConfigError, ...] = self._analyze(self.state.push)
        self.ready = False
        self.store.subscribe(self._on_store_update)
        self.secure: SecureXds | None = None
        self.root_publisher: RootPublisher | None = None
        # The API server config comes from, on a cluster: the CA's and the leaders' writes.
        self.cluster: Client | None = self._cluster_client()
        self.elections: dict[str, LeaderElection] = {}
        self.status_writer: StatusWriter | None = None
        if self.cluster is not None:
            self._elect(self.cluster)
        if options.secure_xds_address:
            from pilotfish.discovery.secure_xds import SecureXds
            if options.certs is None:
                raise ValueError("DiscoveryOptions.certs is required with secure_xds_address")
            revision = str(config.injection.get("revision") or "")
            cluster = self.cluster
            # Raises CaSetupError before anything listens: bad CA files fail the start.
            self.secure = SecureXds.create(plugins, self.xds, options.secure_xds_address,
                                           options.certs, options.token_key,
                                           config.mesh.root_namespace, revision, cluster,
                                           pods=lambda: self.store.objects("Pod"))
            if cluster is not None:
                from pilotfish.discovery.cluster_ca import RootPublisher
                from pilotfish.discovery.leader import NAMESPACE_CONTROLLER
                # The webhooks' caBundle on every replica (as istiod's webhook patcher:
                # its writes test the resourceVersion), the ConfigMaps by the leader only.
                self.root_publisher = RootPublisher(
                    cluster, self.secure.provider.trust_bundle, config.mesh.root_namespace,
                    revision, options.root_publish_interval, parts=frozenset({"webhooks"}))
                configmaps = RootPublisher(
                    cluster, self.secure.provider.trust_bundle, config.mesh.root_namespace,
                    revision, options.root_publish_interval,
                    parts=frozenset({"configmaps"}))
                self.elections[NAMESPACE_CONTROLLER].add_run(configmaps.run)
        self.webhooks: Webhooks | None = None
        if options.webhook_address:
            from pilotfish.discovery.webhooks import Webhooks
            if self.secure is None:
                raise ValueError("the webhooks serve TLS with a certificate from the CA: "
                                 "they need secure_xds_address (--secure-xds-address)")
            self.webhooks = Webhooks(config, self.store, plugins, self.secure.serving)
            self.secure.on_renew.append(self.webhooks.renewed)

    def _elect(self, cluster: Client) -> None:
        """The Leases of discovery's namespace (the root namespace) that make one replica
        at a time do some work, and the Gateway API status writer, run while leading."""
        from pilotfish.discovery import leader
        from pilotfish.discovery.gateway_status import StatusWriter

        me = leader.identity()
        timing = leader.Timing.for_lease(self.options.lease_duration)
        for name in (leader.GATEWAY_STATUS, leader.NAMESPACE_CONTROLLER):
            self.elections[name] = leader.LeaderElection(cluster, leader.Election(
                self.config.mesh.root_namespace, name, me, timing))
        self.status_writer = StatusWriter(cluster, self.gateway_statuses,
                                          self.options.status_interval)
        self.elections[leader.GATEWAY_STATUS].add_run(self.status_writer.run)

    def gateway_statuses(self) -> list[dict[str, Any]]:
        """The Gateway API status the latest rebuild computed for the cluster's objects
        (not for those of a ``--config-dir`` beside it)."""
        return self.state.push.gateway_api.status.view(origin="kubernetes:")

    def _cluster_client(self) -> Client | None:
        """The API server the CA keeps its root in and asks about pod tokens, and the
        leaders write to: the one the config comes from (a kubeconfig, or the pod's own
        cluster)."""
        sources = self.options.sources
        if sources.kubeconfig is None and not sources.in_cluster:
            return None
        from pilotfish.core.security.provider import CaSetupError
        from pilotfish.plugins.kube import client
        try:
            return client.load(sources.kubeconfig, sources.kube_context, pool_size=16)
        except client.ConfigError as exc:
            raise CaSetupError(str(exc)) from exc

    # -- generation ----------------------------------------------------------------------

    def _build_context(self) -> push_context_mod.PushContext:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        version = f"{stamp}/{next(self._versions)}"
        return push_context_mod.build(self.store.objects(), self.mesh_settings(), version)

    def mesh_settings(self) -> MeshSettings:
        """The mesh settings pushes use: the mesh config file's ``mesh:``, under Istio's
        mesh config in the ``istio`` ConfigMap of the root namespace when a source holds
        one (a cluster's, or a file's). A ConfigMap that cannot be read is reported and the
        last good settings stay."""
        holder = self.store.get(self._mesh_key)
        text = (holder.body.get("data") or {}).get("mesh") if holder is not None else None
        if holder is None or not isinstance(text, str):
            self._mesh, self._mesh_text, self._mesh_problem = self.config.mesh, None, None
            return self._mesh
        if self._mesh_text == text:
            return self._mesh  # read already (and what failed, reported)
        self._mesh_text = text
        where = f"{holder.source}: ConfigMap {holder.namespace}/{holder.name}: data.mesh"
        try:
            settings, ignored = meshconfig.overlay(self.config, text, where)
        except meshconfig.MeshConfigError as exc:
            message = str(exc).removeprefix(where).lstrip(":. ")
            self._mesh_problem = ConfigError(holder.source.file, holder.source.line, message,
                                             self._mesh_key, "data.mesh")
            log.warning("%s; the last good mesh settings stay", exc)
            return self._mesh
        if ignored:
            log.info("%s: not honoured by pilotfish: %s", where, ", ".join(ignored))
        if settings.trust_domain != self.config.mesh.trust_domain:
            log.warning("%s: trustDomain %s applies to new pushes; the CA signs for %s until "
                        "discovery restarts", where, settings.trust_domain,
                        self.config.mesh.trust_domain)
        self._mesh, self._mesh_problem = settings, None
        return settings

    def _resources(self, type_url: str, proxy: Proxy) -> ResourceSet:
        return self.cache.resources(self.state, type_url, proxy)

    def resources_for(self, proxy: Proxy, type_urls: Sequence[str] | None = None
                      ) -> dict[str, ResourceSet]:
        """What discovery would send this proxy now (used by /debug/config_dump)."""
        urls = type_urls or self.generators.type_urls(proxy.kind)
        return {url: self._resources(url, proxy) for url in urls}

    def rebuild(self, request: PushRequest) -> list[str]:
        """Build a new push context for a batch of changes; return the xDS types to push."""
        started = self._clock()
        push = self._build_context()
        kinds = None if request.forced else request.kinds
        previous = self.state
        self.state = previous.advance(push, kinds, self.generators)
        self.cache.prune(self.state)
        self.analysis = self._analyze(push)
        self._report([*push.problems, *self.analysis])
        changed = self.state.changed_types(previous)
        if self.status_writer is not None:
            self.status_writer.changed()
        self.last_push = PushRecord(
            version=push.version,
            at=time.time(),
            changed_types=tuple(changed),
            changed_keys=len(request.changed or ()),
            build_seconds=self._clock() - started,
            pushes=self.last_push.pushes + 1,
        )
        return changed

    def _joined(self, connection: xds_server.Connection) -> None:
        scope = connection.proxy.scope
        self._scopes[scope] = self._scopes.get(scope, 0) + 1

    def _left(self, connection: xds_server.Connection) -> None:
        scope = connection.proxy.scope
        count = self._scopes.get(scope, 0) - 1
        if count > 0:
            self._scopes[scope] = count
        else:
            self._scopes.pop(scope, None)
            self.cache.forget(scope)

    def config_errors(self) -> list[ConfigError]:
        """What stands wrong now: the store's errors, objects the push context left out,
        and generations that failed (``/debug/config_errors``)."""
        failed = [ConfigError("(generation)", 0, message, severity="error")
                  for message in sorted(set(self.cache.failures.values()))]
        mesh = [self._mesh_problem] if self._mesh_problem is not None else []
        return [*self.store.errors(), *mesh, *self.state.push.problems, *self.analysis,
                *failed]

    def _analyze(self, push: push_context_mod.PushContext) -> tuple[ConfigError, ...]:
        """What ``pilotfish analyze`` calls an error in the config being served (a route to
        a subset no DestinationRule defines, an unknown host, ...), as warnings: the
        objects are valid and stay served as written. One failing analyzer hides no other."""
        inputs = analysis.inputs_for(self.store, push, now=time.time())
        found: list[Finding] = []
        for name, analyzer in analysis.ANALYZERS:
            try:
                found += [f for f in analyzer(inputs) if f.severity is Level.ERROR]
            except Exception:
                log.exception("analyzer %s failed; its findings are left out", name)
        return tuple(
            ConfigError(f.file, f.line, f"{f.check.code} {f.check.name}: {f.message} (found "
                        "by analysis; served as written)", f.key, f.field, severity="warning")
            for f in analysis.sort(found))

    def _report(self, problems: Sequence[ConfigError]) -> None:
        """Log objects the push context left out and the analyzers' errors, once each while
        they stay."""
        current = frozenset(problems)
        for problem in sorted(current - self._reported, key=str):
            log.warning("%s", problem)
        self._reported = current

    # -- events --------------------------------------------------------------------------

    def _on_store_update(self, update: StoreUpdate) -> None:
        for error in update.errors:
            (log.warning if error.severity == "error" else log.info)("%s", error)
        if self._mesh_key in update.changed:  # every generator reads the mesh settings
            self.debouncer.add(PushRequest.full("mesh", self._clock()), self._clock())
            self._wake.set()
        elif update.changed:
            self.debouncer.add(PushRequest.for_keys(update.changed, "config", self._clock()),
                               self._clock())
            self._wake.set()

    def request_full_push(self, reason: str = "debug") -> None:
        self.debouncer.add(PushRequest.full(reason, self._clock(), forced=True), self._clock())
        self._wake.set()

    async def run_pushes(self) -> None:
        while True:
            wait = self.debouncer.wait_time(self._clock())
            if wait is None:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            if wait > 0:
                with anyio.move_on_after(wait):
                    await self._wake.wait()
                if self._wake.is_set():
                    self._wake = anyio.Event()
                continue
            request = self.debouncer.take(self._clock())
            if request is None:
                continue
            try:
                changed = self.rebuild(request)
                self.push_error = ""
                if changed:
                    log.info("push %s: %s (%d changed objects)", self.state.push.version,
                             ",".join(_short(t) for t in changed), len(request.changed or ()))
                    self.xds.push(frozenset(changed))
            except Exception as exc:
                # A bug must not stop discovery: keep serving the last state, and say so
                # (/ready turns 503 with the reason until a push succeeds).
                self.push_error = (f"the latest push failed ({type(exc).__name__}: {exc}); "
                                   "the previous config stays in force")
                log.exception("push failed; the previous config stays in force")
            finally:
                self.debouncer.done()

    # -- running -------------------------------------------------------------------------

    async def run(
        self, sources: Sequence[ConfigSource] | None = None, *,
        task_status: anyio.abc.TaskStatus[Discovery] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        from pilotfish.discovery import debug
        if sources is None:
            sources = self.plugins.config_sources(self.options.sources)
        try:
            async with anyio.create_task_group() as tg:
                for source in sources:
                    await tg.start(source.run, self.store)
                # Serve a complete view from the first connection on: never push empty config.
                self.debouncer = Debouncer(self.debouncer.after, self.debouncer.max)
                self.rebuild(PushRequest.full("init", self._clock(), forced=True))
                tg.start_soon(self.run_pushes)
                await tg.start(self.xds.run)
                await tg.start(xds_server.serve, self.xds, self.options.xds_address)
                if self.secure is not None:
                    await tg.start(self.secure.serve)
                if self.root_publisher is not None:
                    await tg.start(self.root_publisher.run)
                # With a complete view built: a new leader writes no status from half of it.
                for election in self.elections.values():
                    await tg.start(election.run)
                if self.webhooks is not None and self.options.webhook_address:
                    await tg.start(self.webhooks.serve, self.options.webhook_address)
                if self.options.debug_address:
                    await tg.start(debug.server(self).serve, self.options.debug_address)
                self.ready = True
                log.info("discovery ready: xDS on %s, secure xDS on %s, debug on %s",
                         self.options.xds_address, self.options.secure_xds_address or "(off)",
                         self.options.debug_address)
                task_status.started(self)
        finally:
            if self.cluster is not None:
                self.cluster.close()


GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Collect less often than CPython's defaults, and never walk what start-up built
    (`pilotfish discovery` calls it once it is ready; it changes the whole process).

    Discovery holds millions of long-lived objects (resources, sessions, the names they
    watch). With the default thresholds the young generation is collected every 700
    allocations, and each full collection walks all of them: ~120 ms with 2,000 proxies,
    every stream stalled meanwhile (measured: a one-endpoint push to 2,000 proxies went
    from 1.02-1.16 s to 1.00-1.07 s with these thresholds)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _short(type_url: str) -> str:
    from pilotfish.core.xds import types

    return types.short(type_url)
