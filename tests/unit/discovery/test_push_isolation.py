"""One bad object, one failing generator, one failing push: each costs only itself.

Validation keeps malformed objects out of the store; these are the defences behind it, for
what gets past (a plugin's kind, a checker's blind spot, a bug): the object is left out and
named, a generator's failure costs its type for its scope and falls back to the last good
set, and a push that fails keeps the previous config and turns /ready to 503 with why.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from pilotfish.core import push_context
from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.meshconfig import MeshConfig, MeshSettings
from pilotfish.core.objects import ConfigKey
from pilotfish.core.plugins import Plugins
from pilotfish.core.proxy import parse_node
from pilotfish.core.push import PushRequest
from pilotfish.core.xds import types
from pilotfish.core.xds.generator import GenerationCache, GenerationError, Generators, PushState
from pilotfish.core.yamlload import load_text
from pilotfish.discovery import debug
from pilotfish.discovery.app import Discovery, DiscoveryOptions
from pilotfish.testing.config import WEB_SERVICE
from pilotfish.translators.cds import RouterClusters, SidecarClusters

GOOD = WEB_SERVICE
# What validation would refuse, handed straight to the push context.
BAD = """\
apiVersion: v1
kind: Service
metadata: {name: broken, namespace: shop}
spec: {ports: "80"}
---
apiVersion: v1
kind: Endpoints
metadata: {name: broken, namespace: shop}
subsets: {addresses: []}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: shop}
spec: {hosts: 7, gateways: 9}
"""
SIDECAR = parse_node("sidecar~10.0.0.9~client.shop~shop.svc.cluster.local")


def objects(text: str) -> list[Any]:
    found, errors = load_text(text, "config.yaml")
    assert not errors
    return found


def test_a_bad_object_is_left_out_and_named_and_the_rest_is_indexed() -> None:
    push = push_context.build(objects(GOOD + "---\n" + BAD), MeshSettings(), "v1")
    assert set(push.services) == {"web.shop.svc.cluster.local"}
    assert [e.address for e in push.endpoints("web.shop.svc.cluster.local", 80)] == [
        "10.0.0.1"]
    named = {(p.key.kind, p.key.name): p for p in push.problems}
    assert set(named) == {("Service", "broken"), ("Endpoints", "broken"),
                          ("VirtualService", "broken")}
    problem = named[("Service", "broken")]
    assert (problem.file, problem.line, problem.severity) == ("config.yaml", 13, "error")
    assert "it is left out and the rest of the config is served" in problem.message


class Failing:
    """A generator that fails while ``broken`` is true."""

    type_url = types.CLUSTER
    proxy_kinds = frozenset({"sidecar"})
    depends_on = None
    broken = False

    def generate(self, push: Any, proxy: Any, memo: Any) -> list[Any]:
        if self.broken:
            raise KeyError("a bug")
        return SidecarClusters().generate(push, proxy, memo)


def test_a_failing_generator_keeps_the_last_good_set_for_its_scope() -> None:
    failing = Failing()
    generators = Generators.of(failing, RouterClusters())
    cache = GenerationCache(generators)
    push = push_context.build(objects(GOOD), MeshSettings(), "v1")
    state = PushState(push, {}).advance(push, None, generators)
    good = cache.resources(state, types.CLUSTER, SIDECAR)
    failing.broken = True
    state = state.advance(push, None, generators)
    cache.prune(state)
    assert cache.resources(state, types.CLUSTER, SIDECAR) is good  # the last good set
    (message,) = cache.failures.values()
    assert "sidecar/CDS failed for sidecar proxies in namespace shop (KeyError" in message
    assert "the last good config stays in force" in message
    # A scope that never had a good set gets nothing of the type, and says why.
    other = parse_node("sidecar~10.0.0.8~other.db~db.svc.cluster.local")
    with pytest.raises(GenerationError, match="nothing of this type is sent"):
        cache.resources(state, types.CLUSTER, other)
    failing.broken = False
    state = state.advance(push, None, generators)
    cache.prune(state)
    assert cache.resources(state, types.CLUSTER, other).resources
    assert cache.failures == {}


class BrokenDependsOn:
    """A plugin generator whose bug shows only when a push asks what it depends on."""

    type_url = types.LISTENER
    proxy_kinds = frozenset({"echo"})
    broken = False

    @property
    def depends_on(self) -> frozenset[str]:
        if self.broken:
            raise RuntimeError("a plugin bug")
        return frozenset()

    def generate(self, push: Any, proxy: Any, memo: Any) -> list[Any]:
        return []


BROKEN = BrokenDependsOn()


class BrokenPlugin:
    @staticmethod
    @hookimpl
    def pilotfish_xds_generator() -> BrokenDependsOn:
        return BROKEN


def test_a_failing_push_keeps_the_previous_config_and_turns_ready_to_503() -> None:
    plugins = Plugins.from_config(MeshConfig(), groups=["xds"], extra=[BrokenPlugin])
    discovery = Discovery(MeshConfig(), plugins, DiscoveryOptions(debug_address=None))
    discovery.ready = True
    BROKEN.broken = True
    before = discovery.state
    change = PushRequest.for_keys([ConfigKey("Service", "shop", "web")], "config", 0.0)
    discovery.debouncer.add(change, 0.0)

    async def one_push() -> None:
        with anyio.move_on_after(0.5):
            await discovery.run_pushes()

    anyio.run(one_push)
    assert discovery.state is before
    assert discovery.push_error.startswith("the latest push failed (RuntimeError: a plugin "
                                           "bug); the previous config stays in force")
    server = debug.server(discovery)
    ready = anyio.run(server.routes["/ready"], None)
    assert ready.status == 503 and b"the latest push failed" in ready.body
