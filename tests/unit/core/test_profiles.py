"""Profiles are data distributions contribute; generators serve the proxy kinds they declare."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilotfish.core import meshconfig, plugins
from pilotfish.core.xds import types
from pilotfish.testing.plugins import write_distribution

ECHO_KIND = '''
from envoy.config.listener.v3 import listener_pb2

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.plugins import Profile
from pilotfish.core.xds import types

PROFILE = Profile(description="echo proxies", plugins={"xds": ("echo-lds",)})


class EchoListeners:
    type_url = types.LISTENER
    proxy_kinds = frozenset({"echo"})
    depends_on = frozenset({"Service"})

    def generate(self, push, proxy, memo):
        return [listener_pb2.Listener(name="echo")]


@hookimpl
def pilotfish_xds_generator():
    return EchoListeners()
'''

CLAIMS_SIDECARS = '''
from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.xds import types


class Greedy:
    type_url = types.LISTENER
    proxy_kinds = frozenset({"sidecar"})
    depends_on = None

    def generate(self, push, proxy, memo):
        return []


@hookimpl
def pilotfish_xds_generator():
    return Greedy()
'''

NO_KINDS = '''
from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.xds import types


class Old:
    type_url = types.CLUSTER
    depends_on = None

    def generate(self, push, proxy, memo):
        return []


@hookimpl
def pilotfish_xds_generator():
    return Old()
'''


def distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, source: str,
                 entry_points: dict[str, dict[str, str]]) -> None:
    folder = write_distribution(tmp_path / module, f"pilotfish-test-{module}", {module: source},
                                entry_points)
    monkeypatch.syspath_prepend(str(folder))


def config(**data: object) -> meshconfig.MeshConfig:
    return meshconfig.from_dict(data, "pilotfish.yaml")


def test_the_built_in_profiles_are_installed_as_data_with_their_distribution():
    installed = plugins.installed_profiles()
    assert {"sidecar", "grpc"} <= set(installed)
    assert installed["sidecar"].distribution == "pilotfish"
    sidecar = installed["sidecar"].load()
    assert sidecar.plugins["interceptors"] == ("iptables",)
    assert set(installed["grpc"].load().plugins["xds"]) == {
        "grpc-lds", "grpc-rds", "grpc-cds", "grpc-eds"}


def test_profiles_combine_in_order_and_an_unknown_one_lists_the_installed():
    combined = plugins.select(config(profile=["sidecar", "grpc"]), ["xds"])
    assert [p.name for p in combined] == ["cds", "eds", "lds", "rds", "sds", "envoy-filter",
                                          "grpc-lds", "grpc-rds", "grpc-cds", "grpc-eds"]
    with_ambient = plugins.select(config(profile=["sidecar", "ambient"]), ["xds"])
    assert [p.name for p in with_ambient][-6:] == [
        "wds-addresses", "wds-authorization",
        "waypoint-lds", "waypoint-rds", "waypoint-cds", "waypoint-eds"]
    with pytest.raises(plugins.PluginError) as info:
        plugins.select(config(profile=["sidecar", "waypoint"]))
    assert "pilotfish.yaml: profile: unknown profile 'waypoint'" in str(info.value)
    assert "grpc (from pilotfish" in str(info.value)
    with pytest.raises(meshconfig.MeshConfigError, match="profile: expected a profile name"):
        config(profile=[])


def test_a_distribution_adds_a_profile_and_a_generator_for_a_new_proxy_kind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    distribution(tmp_path, monkeypatch, "echo_kind", ECHO_KIND, {
        "pilotfish.profiles": {"echo": "echo_kind:PROFILE"},
        "pilotfish.xds": {"echo-lds": "echo_kind"},
    })
    installed = plugins.installed_profiles()["echo"]
    assert (installed.distribution, installed.version) == ("pilotfish-test-echo_kind", "0.0.1")
    plain = plugins.Plugins.from_config(config()).xds_generators()
    table = plugins.Plugins.from_config(config(profile=["sidecar", "echo"])).xds_generators()
    echo = table.get("echo", types.LISTENER)
    assert type(echo).__name__ == "EchoListeners"
    assert table.type_urls("echo") == [types.LISTENER]  # nothing else serves that kind
    # Sidecars and routers get exactly the generators they got without the plugin.
    for kind in ("sidecar", "router"):
        for url in types.PUSH_ORDER[:4]:
            assert type(table.get(kind, url)) is type(plain.get(kind, url))


def test_two_generators_for_one_kind_and_type_are_refused_naming_both(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    distribution(tmp_path, monkeypatch, "greedy", CLAIMS_SIDECARS,
                 {"pilotfish.xds": {"greedy-lds": "greedy"}})
    active = plugins.Plugins.from_config(config(plugins={"xds": {"add": ["greedy-lds"]}}))
    with pytest.raises(plugins.PluginError) as info:
        active.xds_generators()
    message = str(info.value)
    assert "xds:lds (from pilotfish" in message and "xds:greedy-lds (from pilotfish-test" in message
    assert "both generate LDS for sidecar proxies" in message


def test_a_generator_that_declares_no_proxy_kinds_is_refused_naming_the_plugin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    distribution(tmp_path, monkeypatch, "old_generator", NO_KINDS,
                 {"pilotfish.xds": {"old": "old_generator"}})
    active = plugins.Plugins.from_config(config(plugins={"xds": ["old"]}))
    with pytest.raises(plugins.PluginError, match=r"xds:old \(from pilotfish-test-old_generator"
                       r".*not a generator with type_url, proxy_kinds"):
        active.xds_generators()


def test_the_facade_promises_types_not_any():
    import inspect

    for name, function in inspect.getmembers(plugins.Plugins, inspect.isfunction):
        if name.startswith("_") or "return" not in function.__annotations__:
            continue
        assert "Any" not in str(function.__annotations__["return"]), name
    assert "Any" not in str(plugins.Plugins.has_patches.fget.__annotations__["return"])
