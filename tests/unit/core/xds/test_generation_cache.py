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
    # Endpoints alone changed: the scope's last set is updated, nothing generated afresh.
    assert (cache.generations, cache.updates) == (before, 1)
    assert new_eds.base == eds.version
    assert new_eds.changed == {"outbound|80||web.shop.svc.cluster.local"}


MANY = "\n---\n".join(
    WEB_SERVICE.replace("web", f"web{k}").replace("10.0.0.1", f"10.0.{k}.1")
    for k in range(5)) + """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web2, namespace: shop}
spec:
  host: web2
  subsets: [{name: v1, labels: {app: web2}}, {name: tagged, labels: {tag: x}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: only-some, namespace: shop}
spec:
  workloadSelector: {labels: {app: b}}
  egress: [{hosts: ["./web1.shop.svc.cluster.local", "./web2.shop.svc.cluster.local"]}]
"""


def eds_in_full(config: str, proxy):
    """What a cache that never saw an earlier state generates."""
    generators = Generators.of(Endpoints())
    state = PushState(context(config, "x"), {}).advance(context(config, "x"), None, generators)
    return GenerationCache(generators).resources(state, types.ENDPOINT, proxy)


def test_an_updated_endpoint_set_is_what_full_generation_makes():
    """Every scope (a Sidecar importing some services, subsets from a DestinationRule)
    updated service by service ends as generated from nothing, in the same order."""
    generators = Generators.of(SidecarClusters(), Endpoints())
    cache = GenerationCache(generators)
    proxies = [sidecar("a-1", "a"), sidecar("b-1", "b")]
    state = PushState(context(MANY, "1"), {}).advance(context(MANY, "1"), None, generators)
    for proxy in proxies:
        cache.resources(state, types.ENDPOINT, proxy)
    config = MANY
    for step, (old, new) in enumerate([("10.0.2.1", "10.0.2.9"), ("10.0.4.1", "10.0.4.7"),
                                       ("labels: {app: web2}}", "labels: {app: web2, tag: x}}")]):
        config = config.replace(old, new)
        state = state.advance(context(config, str(step + 2)), frozenset({"Pod"}), generators)
        cache.prune(state)
        for proxy in proxies:
            updated = cache.resources(state, types.ENDPOINT, proxy)
            full = eds_in_full(config, proxy)
            assert list(updated.resources) == list(full.resources)
            assert {n: r.version for n, r in updated.resources.items()} == {
                n: r.version for n, r in full.resources.items()}
            assert updated.version == full.version
    assert cache.updates == 6 and cache.generations == 2


def test_more_than_endpoints_or_a_skipped_epoch_generates_afresh():
    generators = Generators.of(Endpoints())
    cache = GenerationCache(generators)
    proxy = sidecar("a-1", "a")
    state = PushState(context(MANY, "1"), {}).advance(context(MANY, "1"), None, generators)
    cache.resources(state, types.ENDPOINT, proxy)
    # A Service changed (a port added): more than endpoints.
    config = MANY.replace("port: 80", "port: 81", 1)
    state = state.advance(context(config, "2"), frozenset({"Service"}), generators)
    cache.resources(state, types.ENDPOINT, proxy)
    assert (cache.generations, cache.updates) == (2, 0)
    # Two endpoint changes, the scope asked after the second only: generated afresh.
    for step, address in enumerate(("10.0.1.5", "10.0.1.6")):
        config = config.replace(config[config.index("10.0.1."):][:8], address)
        state = state.advance(context(config, str(step + 3)), frozenset({"Pod"}), generators)
    assert cache.resources(state, types.ENDPOINT, proxy).resources == eds_in_full(
        config, proxy).resources
    assert (cache.generations, cache.updates) == (3, 0)


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
