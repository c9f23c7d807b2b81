"""Which EnvoyFilters a proxy gets and in what order, in which context each resource is
patched, what is reported and skipped, and how a change reaches connected proxies."""

from __future__ import annotations

import logging

import anyio
import pytest

from pilotfish.core.meshconfig import MeshConfig
from pilotfish.core.objects import ConfigKey
from pilotfish.core.plugins import Plugins
from pilotfish.core.push import PushRequest
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.discovery.app import Discovery, DiscoveryOptions
from pilotfish.plugins import envoy_filter
from tests.unit.plugins.envoy_filter_mesh import (
    MESH,
    build,
    by_name,
    envoy_filter_yaml,
    http_filters,
    patched,
    router,
    sidecar,
)

HCM = "envoy.filters.network.http_connection_manager"


def add_http_filter(name: str, context: str = "ANY") -> str:
    """A patch appending an HTTP filter named ``name`` (a Lua one) to every HCM."""
    return f"""\
- applyTo: HTTP_FILTER
  match: {{context: {context}, listener: {{filterChain: {{filter: {{name: {HCM}}}}}}}}}
  patch:
    operation: ADD
    value:
      name: {name}
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
        default_source_code: {{inline_string: "function envoy_on_request(h) end"}}
"""


def added(push, proxy, listener: str = "0.0.0.0_8080", chain: int = 0) -> list[str]:
    """The filters the EnvoyFilters added to a listener's HCM (the ``x-`` ones)."""
    found = by_name(patched(types.LISTENER, push, proxy))[listener]
    return [n for n in http_filters(found.filter_chains[chain]) if n.startswith("x-")]


# -- selection and order -------------------------------------------------------------------

def test_root_namespace_filters_apply_everywhere_namespace_ones_at_home():
    push = build(envoy_filter_yaml("mesh-wide", add_http_filter("x-root"),
                                   namespace="istio-system"),
                 envoy_filter_yaml("local", add_http_filter("x-shop")),
                 envoy_filter_yaml("elsewhere", add_http_filter("x-other"), namespace="other"))
    assert added(push, router()) == ["x-root", "x-shop"]
    assert added(push, router("other")) == ["x-root", "x-other"]


def add_cluster(name: str) -> str:
    return f"""\
- applyTo: CLUSTER
  patch: {{operation: ADD, value: {{name: {name}, type: STATIC, connect_timeout: 1s}}}}
"""


def added_clusters(push, proxy) -> list[str]:
    return [c.name for c in patched(types.CLUSTER, push, proxy) if c.name.startswith("x-")]


def test_workload_selector_narrows_to_labelled_proxies():
    push = build(envoy_filter_yaml("picky", add_cluster("x-picky"),
                                   selector="{istio: ingressgateway}"),
                 envoy_filter_yaml("root-picky", add_cluster("x-root-picky"),
                                   namespace="istio-system", selector="{istio: special}"))
    assert added_clusters(push, router()) == ["x-picky"]
    assert added_clusters(push, router(istio="special")) == ["x-root-picky"]
    assert added_clusters(push, router("other", istio="special")) == ["x-root-picky"]
    assert added_clusters(push, router("other")) == []


def test_target_refs_select_the_routers_of_a_gateway_api_gateway():
    refs = ("  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, "
            "name: public}]\n")
    push = build(envoy_filter_yaml("targeted", add_cluster("x-targeted"), extra=refs))
    label = "gateway.networking.k8s.io/gateway-name"
    assert added_clusters(push, router(**{label: "public"})) == ["x-targeted"]
    assert added_clusters(push, router(**{label: "internal"})) == []
    assert added_clusters(push, router()) == []  # a workload selector would have matched
    assert added_clusters(push, router("other", **{label: "public"})) == []


def test_target_refs_to_other_kinds_select_nothing_and_say_so():
    refs = "  targetRefs: [{kind: Service, name: web}]\n"
    document = envoy_filter_yaml("svc", add_cluster("x-svc"), extra=refs)
    assert warnings_for(document) == [
        "spec.targetRefs[0]: targetRefs to core/Service select no proxy: only Gateways "
        "(gateway.networking.k8s.io) are supported"]
    assert added_clusters(build(document), sidecar()) == []


def test_order_is_priority_then_root_namespace_then_creation_then_name():
    push = build(
        envoy_filter_yaml("b", add_http_filter("x-shop-b")),
        envoy_filter_yaml("a", add_http_filter("x-shop-a")),
        envoy_filter_yaml("old", add_http_filter("x-shop-old"),
                          created="2020-01-01T00:00:00Z"),
        envoy_filter_yaml("late", add_http_filter("x-late"), extra="  priority: 10\n"),
        envoy_filter_yaml("early", add_http_filter("x-early"), extra="  priority: -5\n"),
        envoy_filter_yaml("z-root", add_http_filter("x-root"), namespace="istio-system"),
    )
    assert added(push, router()) == ["x-early", "x-root", "x-shop-a", "x-shop-b",
                                     "x-shop-old", "x-late"]


def test_proxy_version_regex_matches_the_istio_version():
    patch = add_http_filter("x-new").replace(
        "match: {", "match: {proxy: {proxyVersion: '^1\\.3[0-9].*'}, ")
    push = build(envoy_filter_yaml("versioned", patch))
    listener = "0.0.0.0_80"
    assert added(push, sidecar(version="1.31.0"), listener) == ["x-new"]
    assert added(push, sidecar(version="1.29.2"), listener) == []
    assert added(push, sidecar(), listener) == []  # no ISTIO_VERSION: no match, as Istio


def test_proxies_of_other_kinds_get_nothing():
    from pilotfish.core.proxy import parse_node

    push = build(envoy_filter_yaml("all", add_http_filter("x-all")))
    grpc = parse_node("sidecar~10.0.0.7~client.shop~shop.svc.cluster.local",
                      {"GENERATOR": "grpc", "LABELS": {"app": "client"}})
    assert not envoy_filter.pilotfish_patch_applies(types.LISTENER, grpc.scope, push)


# -- contexts --------------------------------------------------------------------------------

def test_contexts_of_a_sidecars_listeners_and_clusters():
    push = build(
        envoy_filter_yaml("in", add_http_filter("x-in", "SIDECAR_INBOUND")),
        envoy_filter_yaml("out", add_http_filter("x-out", "SIDECAR_OUTBOUND")),
        envoy_filter_yaml("gw", add_http_filter("x-gw", "GATEWAY")),
        envoy_filter_yaml("clusters", """\
- applyTo: CLUSTER
  match: {context: SIDECAR_INBOUND}
  patch: {operation: MERGE, value: {alt_stat_name: inbound}}
- applyTo: CLUSTER
  match: {context: SIDECAR_OUTBOUND}
  patch: {operation: MERGE, value: {alt_stat_name: outbound}}
"""))
    proxy = sidecar()
    assert added(push, proxy, "virtualInbound", chain=1) == ["x-in"]
    assert added(push, proxy, "0.0.0.0_80") == ["x-out"]
    assert added(push, router()) == ["x-gw"]
    stats = {c.name: c.alt_stat_name for c in patched(types.CLUSTER, push, proxy)}
    assert stats == {
        "outbound|5432||db.shop.svc.cluster.local": "outbound",
        "outbound|80||web.shop.svc.cluster.local": "outbound",
        "BlackHoleCluster": "outbound", "PassthroughCluster": "outbound",
        "inbound|8080||": "inbound", "InboundPassthroughCluster": "inbound"}


def test_a_sidecars_route_tables_are_outbound_a_routers_gateway():
    merge = """\
- applyTo: ROUTE_CONFIGURATION
  match: {context: CONTEXT}
  patch: {operation: MERGE, value: {response_headers_to_add: [{header: {key: x, value: y}}]}}
"""
    for context, proxy, expected in (("SIDECAR_OUTBOUND", sidecar(), True),
                                     ("GATEWAY", sidecar(), False),
                                     ("GATEWAY", router(), True),
                                     ("SIDECAR_OUTBOUND", router(), False)):
        push = build(envoy_filter_yaml("f", merge.replace("CONTEXT", context)))
        tables = patched(types.ROUTE, push, proxy)
        assert all(bool(t.response_headers_to_add) is expected for t in tables), context


# -- what cannot be applied ------------------------------------------------------------------

BAD_VALUE = """\
- applyTo: CLUSTER
  patch: {operation: MERGE, value: {connect_timeout: soon}}
"""


def warnings_for(document: str) -> list[str]:
    objects, errors = load_text(document, "ef.yaml")
    assert not errors
    return [f"{e.field}: {e.message}" for e in envoy_filter.pilotfish_validate_config(
        objects[0])]


def test_a_value_that_is_not_the_envoy_type_skips_the_whole_filter():
    bad = envoy_filter_yaml("bad", add_http_filter("x-bad") + BAD_VALUE)
    (warning,) = warnings_for(bad)
    assert warning.startswith("spec.configPatches[1].patch.value: does not convert into "
                              "envoy.config.cluster.v3.Cluster")
    assert warning.endswith("; the EnvoyFilter is not applied")
    push = build(bad, envoy_filter_yaml("good", add_http_filter("x-good")))
    assert added(push, router()) == ["x-good"]  # nothing of "bad", all of "good"
    assert by_name(patched(types.CLUSTER, push, router()))  # clusters served


@pytest.mark.parametrize(("patch", "warning"), [
    ("- applyTo: CLUSTER\n  patch: {operation: ADD, value: {name: c, typed_extension_"
     "protocol_options: {x: {'@type': type.googleapis.com/envoy.config.filter.http.lua.v2."
     "Lua}}}}\n",
     "spec.configPatches[0].patch.value: referenced type unknown: envoy.config.filter.http."
     "lua.v2.Lua (hint: use the v3 xDS API)"),
    ("- patch: {operation: REMOVE}\n", "spec.configPatches[0].applyTo: missing applyTo"),
    ("- applyTo: CLUSTER\n", "spec.configPatches[0].patch: missing patch"),
    ("- applyTo: CLUSTER\n  patch: {value: {}}\n",
     "spec.configPatches[0].patch.operation: missing patch operation"),
    ("- applyTo: CLUSTER\n  patch: {operation: ADD}\n",
     "spec.configPatches[0].patch.value: missing patch value for non-remove operation"),
    ("- applyTo: CLUSTER\n  match: {proxy: {proxyVersion: '1.('}}\n"
     "  patch: {operation: REMOVE}\n",
     "spec.configPatches[0].match.proxy.proxyVersion: invalid regex for proxy version"),
    ("- applyTo: CLUSTER\n  match: {listener: {}}\n  patch: {operation: REMOVE}\n",
     "spec.configPatches[0].match: applyTo CLUSTER cannot have a listener match"),
    ("- applyTo: NETWORK_FILTER\n  match: {listener: {filterChain: {filter: {name: a, "
     "subFilter: {name: b}}}}}\n  patch: {operation: REMOVE}\n",
     "spec.configPatches[0].match.listener.filterChain.filter.subFilter: a subFilter match "
     "goes with applyTo HTTP_FILTER only"),
    ("- applyTo: HTTP_FILTER\n  match: {listener: {filterChain: {filter: {}}}}\n"
     "  patch: {operation: REMOVE}\n",
     "spec.configPatches[0].match.listener.filterChain.filter.name: filter match has no "
     "name to match on"),
    ("- applyTo: HTTP_FILTER\n  patch: {operation: ADD, value: {typed_config: {'@type': "
     "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}\n",
     "spec.configPatches[0].patch.value.name: a HTTP_FILTER value needs a name"),
])
def test_what_istio_validation_refuses_is_reported_and_skipped(patch: str, warning: str):
    (found,) = warnings_for(envoy_filter_yaml("f", patch))
    assert found.startswith(warning)
    assert found.endswith("the EnvoyFilter is not applied")


@pytest.mark.parametrize(("patch", "warning"), [
    ("- applyTo: BOOTSTRAP\n  patch: {operation: MERGE, value: {node: {id: x}}}\n",
     "spec.configPatches[1].applyTo: BOOTSTRAP patches are not applied: the pilotfish "
     "agent writes the bootstrap"),
    ("- applyTo: EXTENSION_CONFIG\n  patch: {operation: ADD, value: {name: e, typed_config: "
     "{'@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}\n",
     "spec.configPatches[1].applyTo: EXTENSION_CONFIG patches are not applied: pilotfish "
     "serves no extension configs (ECDS)"),
    ("- applyTo: CLUSTER\n  match: {proxy: {metadata: {A: b}}}\n  patch: {operation: REMOVE}\n",
     "spec.configPatches[1].match.proxy.metadata: match.proxy.metadata is not supported"),
    ("- applyTo: CLUSTER\n  match: {context: WAYPOINT}\n  patch: {operation: REMOVE}\n",
     "spec.configPatches[1].match.context: the WAYPOINT context matches nothing"),
])
def test_parts_pilotfish_cannot_apply_leave_the_other_patches(patch: str, warning: str):
    document = envoy_filter_yaml("f", add_http_filter("x-kept") + patch)
    (found,) = warnings_for(document)
    assert found.startswith(warning) and "the EnvoyFilter is not applied" not in found
    push = build(document)
    assert added(push, router()) == ["x-kept"]
    assert len(patched(types.CLUSTER, push, router())) == 3  # the REMOVEs applied nowhere


def test_notes_do_not_stop_a_patch():
    patch = add_http_filter("x-noted").replace(
        "default_source_code:", "no_such_field: 1\n        default_source_code:").replace(
        "filter: {name: envoy.filters.network.http_connection_manager}",
        "filter: {name: envoy.filters.network.http_connection_manager, "
        "subFilter: {name: envoy.router}}")
    document = envoy_filter_yaml("noted", patch)
    found = warnings_for(document)
    assert any("no_such_field" in w and "ignored, as Istio does" in w for w in found)
    assert any("deprecated filter name 'envoy.router'" in w for w in found)
    assert added(build(document), router()) == ["x-noted"]


def test_a_merge_of_different_types_is_logged_once_and_leaves_the_filter(
        caplog: pytest.LogCaptureFixture):
    patch = f"""\
- applyTo: HTTP_FILTER
  match:
    listener:
      filterChain: {{filter: {{name: {HCM}, subFilter: {{name: envoy.filters.http.router}}}}}}
  patch:
    operation: MERGE
    value:
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors
"""
    push = build(envoy_filter_yaml("mismatch", patch))
    plain = by_name(patched(types.LISTENER, build(), router()))
    with caplog.at_level(logging.WARNING, logger="pilotfish.envoyfilter"):
        first = by_name(patched(types.LISTENER, push, router()))
        patched(types.LISTENER, push, router(istio="other-scope"))
        # The next push with the same problem: still said once.
        patched(types.LISTENER, build(envoy_filter_yaml("mismatch", patch)), router())
    assert first == plain
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "EnvoyFilter shop/mismatch configPatches[0]" in lines[0]
    assert "does not merge into envoy.filters.http.router" in lines[0]


# -- caching and pushes ----------------------------------------------------------------------

def test_scopes_no_envoy_filter_selects_are_served_as_generated():
    push = build(envoy_filter_yaml("picky", add_http_filter("x-picky"),
                                   selector="{istio: ingressgateway}"))
    assert envoy_filter.pilotfish_patch_applies(types.LISTENER, router().scope, push)
    assert not envoy_filter.pilotfish_patch_applies(types.LISTENER, sidecar().scope, push)
    assert not envoy_filter.pilotfish_patch_applies(types.ENDPOINT, router().scope, push)
    assert not envoy_filter.pilotfish_patch_applies(types.CLUSTER, router().scope, push)


def test_an_envoy_filter_added_after_a_proxy_connected_is_pushed_to_it():
    config = MeshConfig()
    discovery = Discovery(config, Plugins.from_config(config), DiscoveryOptions(
        debug_address=None))
    objects, errors = load_text(MESH, "mesh.yaml")
    assert not errors
    discovery.store.replace("mesh.yaml", objects)
    discovery.rebuild(PushRequest.full("init", 0.0, forced=True))
    gateway = router()
    before = discovery.resources_for(gateway)
    assert "x-added" not in str(before[types.LISTENER].resources)

    def change(text: str) -> list[str]:
        objects, errors = load_text(text, "ef.yaml")
        assert not errors
        discovery.store.replace("ef.yaml", objects)
        key = ConfigKey("EnvoyFilter", "shop", "added")
        return discovery.rebuild(PushRequest.for_keys([key], "config", 0.0))

    changed = change(envoy_filter_yaml("added", add_http_filter("x-added")))
    assert changed == [types.CLUSTER, types.LISTENER, types.ROUTE]
    after = discovery.resources_for(gateway)
    listener = after[types.LISTENER].resources["0.0.0.0_8080"]
    assert b"x-added" in listener.any_bytes
    assert after[types.CLUSTER] is not before[types.CLUSTER]
    assert after[types.CLUSTER].resources == before[types.CLUSTER].resources  # same bytes

    edited = change(envoy_filter_yaml("added", add_http_filter("x-edited")))
    assert types.LISTENER in edited
    assert b"x-edited" in discovery.resources_for(gateway)[types.LISTENER].resources[
        "0.0.0.0_8080"].any_bytes


def test_discovery_reports_a_broken_envoy_filter_and_serves_the_rest():
    config = MeshConfig()
    discovery = Discovery(config, Plugins.from_config(config), DiscoveryOptions(
        debug_address=None))
    text = MESH + envoy_filter_yaml("bad", BAD_VALUE) + envoy_filter_yaml(
        "good", add_http_filter("x-good"))
    objects, errors = load_text(text, "mesh.yaml")
    assert not errors
    discovery.store.replace("mesh.yaml", objects)

    async def push() -> None:
        discovery.debouncer.add(PushRequest.full("init", 0.0, forced=True), 0.0)
        with anyio.move_on_after(0.3):
            await discovery.run_pushes()

    anyio.run(push)
    (problem,) = [e for e in discovery.config_errors() if e.key and e.key.name == "bad"]
    assert problem.severity == "warning" and problem.field == "spec.configPatches[0].patch.value"
    served = discovery.resources_for(router())
    listener = served[types.LISTENER].resources["0.0.0.0_8080"]
    assert b"x-good" in listener.any_bytes
    assert set(served[types.CLUSTER].resources) == {
        "outbound|5432||db.shop.svc.cluster.local", "outbound|80||web.shop.svc.cluster.local",
        "BlackHoleCluster"}
