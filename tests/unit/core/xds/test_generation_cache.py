"""Generation is shared per proxy scope and repeated only for types a change can affect."""

from __future__ import annotations

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import parse_node
from pilotfish.core.xds import types
from pilotfish.core.xds.generator import GenerationCache, Generators, PushState
from pilotfish.core.yamlload import load_text
from pilotfish.testing.config import WEB_SERVICE
from pilotfish.translators.cds import RouterClusters, SidecarClusters
from pilotfish.translators.eds import Endpoints

CONFIG = WEB_SERVICE


def context(config: str, version: str):
    objects, _ = load_text(config, "c.yaml")
    return push_context.build(objects, MeshSettings(), version)


def sidecar(name: str, app: str):
    return parse_node(f"sidecar~10.1.0.{len(name)}~{name}.shop~shop.svc.cluster.local",
                      {"LABELS": {"app": app}})


def test_proxies_in_one_scope_share_one_generation_and_the_bytes():
    generators = Generators.of(SidecarClusters(), RouterClusters(), Endpoints())
    cache = GenerationCache(generators)
    state = PushState(context(CONFIG, "1"), {}).advance(context(CONFIG, "1"), None, generators)
    a1, a2, b = sidecar("a-1", "a"), sidecar("a-2", "a"), sidecar("b-1", "b")
    sets = [cache.resources(state, types.CLUSTER, p) for p in (a1, a2, b)]
    assert cache.generations == 2
    assert sets[0] is sets[1]
    name = "outbound|80||web.shop.svc.cluster.local"
    assert sets[0].resources[name].any_bytes == sets[2].resources[name].any_bytes
    # Endpoint assignments do not depend on the scope: one serialization serves all.
    eds = [cache.resources(state, types.ENDPOINT, p) for p in (a1, b)]
    assert eds[0].resources[name] is eds[1].resources[name]


def test_endpoint_change_moves_only_the_endpoint_epoch():
    generators = Generators.of(SidecarClusters(), RouterClusters(), Endpoints())
    cache = GenerationCache(generators)
    proxy = sidecar("a-1", "a")
    first = PushState(context(CONFIG, "1"), {}).advance(context(CONFIG, "1"), None, generators)
    cds = cache.resources(first, types.CLUSTER, proxy)
    eds = cache.resources(first, types.ENDPOINT, proxy)
    moved = CONFIG.replace("10.0.0.1", "10.0.0.2")
    second = first.advance(context(moved, "2"), frozenset({"Pod"}), generators)
    assert second.changed_types(first) == [types.ENDPOINT]
    cache.prune(second)
    before = cache.generations
    assert cache.resources(second, types.CLUSTER, proxy) is cds
    new_eds = cache.resources(second, types.ENDPOINT, proxy)
    assert cache.generations == before + 1
    assert new_eds.base == eds.version
    assert new_eds.changed == {"outbound|80||web.shop.svc.cluster.local"}


def test_scopes_that_come_and_go_leave_no_encodings_behind():
    """Found by the fuzz suite (tests/fuzz): every scope's clusters and listeners were kept
    encoded for the whole epoch, so proxies with new labels each (74 kB per scope here)
    grew discovery's memory without bound while the config stood still."""
    generators = Generators.of(SidecarClusters(), RouterClusters(), Endpoints())
    cache = GenerationCache(generators)
    state = PushState(context(CONFIG, "1"), {}).advance(context(CONFIG, "1"), None, generators)
    for index in range(50):
        proxy = parse_node("sidecar~10.1.0.9~p.shop~shop.svc.cluster.local",
                           {"LABELS": {"run": str(index)}})
        for type_url in (types.CLUSTER, types.ENDPOINT):
            assert cache.resources(state, type_url, proxy).resources
        cache.forget(proxy.scope)
    statistics = cache.statistics()
    assert (statistics["sets"], statistics["latest"]) == (0, 0)
    assert statistics["encodings"] == 1  # the one shared endpoint assignment
