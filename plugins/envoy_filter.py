"""The ``envoy-filter`` plugin: Istio's EnvoyFilter, applied to what the generators made.

A built-in patch plugin (``pilotfish_patch_resources``), active in the ``sidecar``
profile. Every EnvoyFilter (``networking.istio.io/v1alpha3``) patches the listeners,
route tables and clusters of the Envoy proxies it selects, as istiod does:

- *Selection*: one in the mesh's root namespace applies to every proxy, one elsewhere to
  the proxies of its namespace; ``workloadSelector.labels`` narrows either to the proxies
  carrying those labels, ``targetRefs`` to the routers of the named Gateway API Gateways
  (``gateway.networking.k8s.io/gateway-name``) of its namespace.
- *Order*: ``priority`` (lowest first), then root namespace first, then creation time,
  then ``name.namespace``; within one EnvoyFilter, its patches as written.
- *Contexts*: a router's resources are ``GATEWAY``; a sidecar's ``virtualInbound`` (and
  any inbound listener), the route tables inline in it and its ``inbound|…`` and inbound
  passthrough clusters are ``SIDECAR_INBOUND``; the rest of a sidecar's listeners, its
  RDS route tables and clusters are ``SIDECAR_OUTBOUND``.

Output is cached per proxy scope, and patches decide from the scope and the EnvoyFilters
only, so the plugin names its kind (``pilotfish_patch_depends_on``): a new or changed
EnvoyFilter moves the LDS, RDS and CDS epochs and reaches connected proxies. Scopes no
EnvoyFilter selects are served exactly as generated (``pilotfish_patch_applies``).

An EnvoyFilter that cannot be applied as written is reported as a validation warning and
skipped as a whole; see `pilotfish.plugins.envoy_filter_patches` for what counts as such.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from envoy.config.core.v3 import base_pb2

from pilotfish.core.gateway_api import GATEWAY_NAME_LABEL
from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.model import labels_match
from pilotfish.core.objects import NETWORKING, ConfigObject, format_path
from pilotfish.core.proxy import ProxyScope, ProxyType
from pilotfish.core.push_context import PushContext
from pilotfish.core.store import ConfigError
from pilotfish.core.xds import types
from pilotfish.plugins.envoy_filter_apply import (
    GATEWAY,
    SIDECAR_INBOUND,
    SIDECAR_OUTBOUND,
    Patches,
    patch_clusters,
    patch_listeners,
    patch_route_table,
)
from pilotfish.plugins.envoy_filter_patches import (
    ROUTE_CLASS,
    Compiled,
    Patch,
    Problem,
    compile_filter,
)

log = logging.getLogger("pilotfish.envoyfilter")

KIND = "EnvoyFilter"
# The applyTo classes each patched type takes. Route tables inline in inbound listeners
# are patched with the listeners.
APPLY_TO: Mapping[str, frozenset[str]] = {
    types.LISTENER: frozenset({"LISTENER", "LISTENER_FILTER", "FILTER_CHAIN",
                               "NETWORK_FILTER", "HTTP_FILTER"}) | ROUTE_CLASS,
    types.ROUTE: ROUTE_CLASS,
    types.CLUSTER: frozenset({"CLUSTER"}),
}
# The proxies served by the Envoy generators (EnvoyFilter means nothing to gRPC's client).
PROXY_KINDS = frozenset({"sidecar", "router"})
_INBOUND_CLUSTERS = ("inbound|", "InboundPassthroughCluster")


@attrs.define
class _Index:
    """The EnvoyFilters of one push context, in application order, and what each scope
    gets of them (filled as scopes are generated)."""

    push: PushContext
    filters: list[Compiled]
    scopes: dict[ProxyScope, Patches] = attrs.field(factory=dict)
    # What was logged about this push's filters, and about the previous push's: a problem
    # that stays is logged once, not once per push or per scope.
    reported: set[str] = attrs.field(factory=set)
    previously: frozenset[str] = frozenset()

    def report(self, line: str) -> None:
        if line not in self.reported and line not in self.previously:
            log.warning("%s", line)
        self.reported.add(line)


class _State:
    """Compiled EnvoyFilters and the latest push context's index.

    Compiling converts every patch value into Envoy messages: done once per object and
    shared by every scope and push while the object is unchanged (objects are immutable;
    a changed one is a new object). Only the objects of the latest push are kept."""

    def __init__(self) -> None:
        self._compiled: dict[int, tuple[ConfigObject, Compiled]] = {}
        self._index: _Index | None = None

    def index(self, push: PushContext) -> _Index:
        if self._index is not None and self._index.push is push:
            return self._index
        index = _Index(push, [], previously=frozenset(
            self._index.reported if self._index is not None else ()))
        compiled: dict[int, tuple[ConfigObject, Compiled]] = {}
        for obj in push.objects(KIND):
            if obj.group != NETWORKING:
                continue
            hit = self._compiled.get(id(obj))
            filter_ = hit[1] if hit is not None and hit[0] is obj else compile_safely(obj)
            compiled[id(obj)] = (obj, filter_)
            if filter_.fatal:
                first = next(p for p in filter_.problems if p.grade == "fatal")
                index.report(f"EnvoyFilter {obj.namespace}/{obj.name} is not applied: "
                             f"{format_path(first.path)}: {first.message}")
            else:
                index.filters.append(filter_)
        self._compiled = compiled
        root = push.mesh.root_namespace
        index.filters.sort(key=lambda f: (f.priority, f.key.namespace != root, f.creation,
                                          f"{f.key.name}.{f.key.namespace}"))
        self._index = index
        return index

    def patches(self, push: PushContext, scope: ProxyScope) -> Patches:
        index = self.index(push)
        found = index.scopes.get(scope)
        if found is None:
            found = index.scopes[scope] = _select(index.filters, scope,
                                                  push.mesh.root_namespace)
        return found

    def reporter(self, push: PushContext) -> Callable[[Patch, str], None]:
        index = self.index(push)
        return lambda patch, message: index.report(f"{patch.origin}: {message}")


def compile_safely(obj: ConfigObject) -> Compiled:
    """`compile_filter`, with a failure of its own (a bug, or a shape the schema should
    have refused) costing this EnvoyFilter, said as a fatal problem."""
    try:
        return compile_filter(obj)
    except Exception as exc:
        log.exception("reading EnvoyFilter %s/%s failed", obj.namespace, obj.name)
        return Compiled(key=obj.key, priority=0, creation="", selector=None, gateways=None,
                        patches=(), problems=(Problem((), f"cannot be read ("
                                                      f"{type(exc).__name__}: {exc})",
                                                      "fatal"),))


_STATE = _State()


def _select(filters: Sequence[Compiled], scope: ProxyScope, root: str) -> Patches:
    """The patches of the filters that select a scope, by applyTo, in order."""
    if scope.kind not in PROXY_KINDS:
        return {}
    labels = scope.label_map
    out: dict[str, list[Patch]] = defaultdict(list)
    for filter_ in filters:
        namespace = filter_.key.namespace
        if namespace not in (root, scope.namespace):
            continue
        if filter_.gateways is not None:
            if namespace != scope.namespace or labels.get(GATEWAY_NAME_LABEL) not in (
                    filter_.gateways):
                continue
        elif not labels_match(filter_.selector, labels):
            continue
        for patch in filter_.patches:
            version = patch.proxy_version
            if version is None or (scope.istio_version and version.search(
                    scope.istio_version)):
                out[patch.apply_to].append(patch)
    return {apply_to: tuple(patches) for apply_to, patches in out.items()}


# -- hooks ---------------------------------------------------------------------------------


@hookimpl
def pilotfish_patch_depends_on(type_url: str) -> tuple[str, ...]:
    return (KIND,) if type_url in APPLY_TO else ()


@hookimpl
def pilotfish_patch_applies(type_url: str, scope: ProxyScope, push: PushContext) -> bool:
    wanted = APPLY_TO.get(type_url)
    if wanted is None or scope.kind not in PROXY_KINDS:
        return False
    patches = _STATE.patches(push, scope)
    return any(patches.get(apply_to) for apply_to in wanted)


@hookimpl
def pilotfish_patch_resources(type_url: str, scope: ProxyScope, push: PushContext,
                              resources: list[Any]) -> None:
    if not pilotfish_patch_applies(type_url, scope, push):
        return
    patches = _STATE.patches(push, scope)
    report = _STATE.reporter(push)
    gateway = scope.type is ProxyType.ROUTER
    contexts = (GATEWAY,) if gateway else (SIDECAR_OUTBOUND, SIDECAR_INBOUND)
    generated = [copy.deepcopy(message) for message in resources]
    try:
        if type_url == types.LISTENER:
            resources[:] = patch_listeners(
                resources, lambda listener: GATEWAY if gateway else _listener_context(listener),
                contexts, patches, report,
                lambda table, context: patch_route_table(table, context, patches, gateway))
        elif type_url == types.ROUTE:
            for table in resources:
                patch_route_table(table, GATEWAY if gateway else SIDECAR_OUTBOUND, patches,
                                  gateway)
        elif type_url == types.CLUSTER:
            resources[:] = patch_clusters(
                resources, lambda cluster: GATEWAY if gateway else _cluster_context(cluster),
                contexts, _inbound_hosts(push, scope), patches, report)
    except Exception:
        # A bug here costs the EnvoyFilters of this type, never the generated config.
        log.exception("applying EnvoyFilters to %s for %s proxies in namespace %s failed; "
                      "they are served as generated", types.short(type_url), scope.kind,
                      scope.namespace)
        resources[:] = generated


@hookimpl
def pilotfish_validate_config(obj: ConfigObject) -> list[ConfigError]:
    """What stops an EnvoyFilter, or a part of it, from applying (warnings: the object is
    stored; what cannot apply is skipped)."""
    if obj.group != NETWORKING or obj.kind != KIND:
        return []
    out = []
    for problem in compile_safely(obj).problems:
        message = problem.message
        if problem.grade == "fatal":
            message += "; the EnvoyFilter is not applied"
        out.append(ConfigError(obj.source.file, obj.line_of(problem.path), message, obj.key,
                               format_path(problem.path), severity="warning"))
    return out


# -- contexts ------------------------------------------------------------------------------


def _listener_context(listener: Any) -> str:
    inbound = (listener.traffic_direction == base_pb2.INBOUND
               or listener.name == "virtualInbound")
    return SIDECAR_INBOUND if inbound else SIDECAR_OUTBOUND


def _cluster_context(cluster: Any) -> str:
    return SIDECAR_INBOUND if cluster.name.startswith(_INBOUND_CLUSTERS) else SIDECAR_OUTBOUND


def _inbound_hosts(push: PushContext, scope: ProxyScope) -> Callable[[int], Sequence[str]]:
    """The hostnames of the services a scope's workload serves, by the port its inbound
    cluster is named for (what ``match.cluster.service`` compares for inbound clusters)."""
    named = dict(scope.pod_ports)
    labels = scope.label_map
    by_port: dict[int, list[str]] = defaultdict(list)
    for service in push.services.values():
        if service.namespace != scope.namespace or not service.selector:
            continue
        if not labels_match(service.selector, labels):
            continue
        for port in service.ports:
            target = port.resolve_target(named)
            if target is not None:
                by_port[target].append(service.hostname)
    return lambda port: by_port.get(port, ())
