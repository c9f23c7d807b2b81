"""Patch plugins that follow config objects: the kinds they name move the epochs of the
types they patch, and scopes they say they leave alone are served as generated (shared,
and brought up to date incrementally on endpoint changes)."""

from __future__ import annotations

from typing import Any

from pilotfish.core import push_context
from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.plugins import Plugins
from pilotfish.core.proxy import ProxyScope, parse_node
from pilotfish.core.push_context import PushContext
from pilotfish.core.xds import types
from pilotfish.core.xds.generator import GenerationCache, Generators, PushState
from pilotfish.core.yamlload import load_text
from pilotfish.testing.config import WEB_SERVICE
from pilotfish.translators.cds import RouterClusters, SidecarClusters
from pilotfish.translators.eds import Endpoints


class OnlyAppA:
    """Patches clusters of the scopes labelled app=a, from a kind of its own."""

    @hookimpl
    def pilotfish_patch_depends_on(self, type_url: str) -> list[str]:
        return ["ClusterTweak"] if type_url == types.CLUSTER else []

    @hookimpl
    def pilotfish_patch_applies(self, type_url: str, scope: ProxyScope,
                                push: PushContext) -> bool:
        return type_url == types.CLUSTER and ("app", "a") in scope.labels

    @hookimpl
    def pilotfish_patch_resources(self, type_url: str, scope: ProxyScope, push: Any,
                                  resources: list[Any]) -> None:
        if type_url == types.CLUSTER and ("app", "a") in scope.labels:
            for cluster in resources:
                cluster.alt_stat_name = "patched"


class Everywhere:
    """Patches without saying where: taken to patch everything."""

    @hookimpl
    def pilotfish_patch_resources(self, type_url: str, scope: Any, push: Any,
                                  resources: list[Any]) -> None:
        pass


def context(version: str) -> PushContext:
    objects, _ = load_text(WEB_SERVICE, "c.yaml")
    return push_context.build(objects, MeshSettings(), version)


def sidecar(app: str, version: str = "") -> Any:
    metadata: dict[str, Any] = {"LABELS": {"app": app}}
    if version:
        metadata["ISTIO_VERSION"] = version
    return parse_node(f"sidecar~10.1.0.1~{app}-1.shop~shop.svc.cluster.local", metadata)


def table(plugins: Plugins) -> Generators:
    entries = [("cds", SidecarClusters()), ("cds", RouterClusters()), ("eds", Endpoints())]
    patched_by = {url: kinds for url in (types.CLUSTER, types.ENDPOINT)
                  if (kinds := plugins.patch_depends_on(url))}
    return Generators(entries, patched_by)


def test_a_kind_patches_depend_on_moves_the_patched_type_only():
    plugins = Plugins(extra=[OnlyAppA()])
    assert plugins.patch_depends_on(types.CLUSTER) == {"ClusterTweak"}
    assert plugins.patch_depends_on(types.ENDPOINT) == frozenset()
    generators = table(plugins)
    first = PushState(context("1"), {}).advance(context("1"), None, generators)
    second = first.advance(context("2"), frozenset({"ClusterTweak"}), generators)
    assert second.changed_types(first) == [types.CLUSTER]


def test_scopes_a_plugin_leaves_alone_are_shared_as_generated():
    plugins = Plugins(extra=[OnlyAppA()])
    generators = table(plugins)
    cache = GenerationCache(generators, plugins)
    state = PushState(context("1"), {}).advance(context("1"), None, generators)
    patched = cache.resources(state, types.CLUSTER, sidecar("a"))
    plain = cache.resources(state, types.CLUSTER, sidecar("b"))
    name = "outbound|80||web.shop.svc.cluster.local"
    assert b"patched" in patched.resources[name].any_bytes
    assert b"patched" not in plain.resources[name].any_bytes
    assert not plugins.patches_apply(types.ENDPOINT, sidecar("a").scope, state.push)


def test_endpoint_changes_stay_incremental_where_no_patch_applies():
    plugins = Plugins(extra=[OnlyAppA()])
    generators = table(plugins)
    cache = GenerationCache(generators, plugins)
    first = PushState(context("1"), {}).advance(context("1"), None, generators)
    cache.resources(first, types.ENDPOINT, sidecar("a"))
    moved, _ = load_text(WEB_SERVICE.replace("10.0.0.1", "10.0.0.2"), "c.yaml")
    second = first.advance(push_context.build(moved, MeshSettings(), "2"),
                           frozenset({"Pod"}), generators)
    cache.resources(second, types.ENDPOINT, sidecar("a"))
    assert cache.updates == 1


def test_a_plugin_that_does_not_say_where_patches_everything():
    plugins = Plugins(extra=[OnlyAppA(), Everywhere()])
    assert plugins.patches_apply(types.ENDPOINT, sidecar("b").scope, context("1"))


def test_the_proxy_version_is_part_of_the_scope():
    assert sidecar("a", "1.30.0").scope.istio_version == "1.30.0"
    assert sidecar("a", "1.30.0").scope != sidecar("a", "1.29.0").scope
    assert sidecar("a").scope.istio_version == ""
