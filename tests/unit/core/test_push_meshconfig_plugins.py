"""Debounce timing, mesh config parsing, plugin selection."""

from __future__ import annotations

import pytest

from pilotfish.core import meshconfig, plugins
from pilotfish.core.objects import ConfigKey
from pilotfish.core.push import Debouncer, PushRequest

KEY_A = ConfigKey("Service", "default", "a")
KEY_B = ConfigKey("VirtualService", "default", "b")


def test_debounce_waits_for_quiet_then_releases_merged_batch():
    d = Debouncer(after=0.1, max=10.0)
    d.add(PushRequest.for_keys([KEY_A], "config", 0.0), now=0.0)
    assert d.take(now=0.05) is None
    d.add(PushRequest.for_keys([KEY_B], "config", 0.08), now=0.08)
    assert d.take(now=0.15) is None  # only 70 ms quiet
    assert d.wait_time(now=0.15) == pytest.approx(0.03)
    batch = d.take(now=0.19)
    assert batch.changed == {KEY_A, KEY_B}
    assert batch.kinds == {"Service", "VirtualService"}
    assert batch.start == 0.0
    assert d.wait_time(now=1.0) is None


def test_debounce_releases_at_max_even_without_quiet():
    d = Debouncer(after=0.1, max=1.0)
    now = 0.0
    released = None
    while released is None:
        d.add(PushRequest.for_keys([KEY_A], "config", now), now=now)
        now += 0.05
        released = d.take(now)
    assert now == pytest.approx(1.0, abs=0.06)


def test_debounce_holds_events_while_a_push_runs():
    d = Debouncer(after=0.1, max=10.0)
    d.add(PushRequest.for_keys([KEY_A], "config", 0.0), now=0.0)
    assert d.take(now=0.2) is not None
    d.add(PushRequest.for_keys([KEY_B], "config", 0.3), now=0.3)
    assert d.take(now=1.0) is None  # busy
    d.done()
    assert d.take(now=1.0).changed == {KEY_B}


def test_full_request_absorbs_keys():
    merged = PushRequest.for_keys([KEY_A], "config", 1.0).merge(PushRequest.full("debug", 0.5))
    assert merged.changed is None and merged.kinds is None and merged.start == 0.5


def test_mesh_config_parses_and_names_bad_fields(tmp_path):
    path = tmp_path / "pilotfish.yaml"
    path.write_text("profile: sidecar\nmesh:\n  connectTimeout: 1.5s\n"
                    "  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"
                    "discovery: {debounceAfter: 20ms}\nplugins: {xds: {remove: [rds]}}\n")
    config = meshconfig.load(path)
    assert config.mesh.connect_timeout == 1.5
    assert config.mesh.outbound_traffic_policy == "REGISTRY_ONLY"
    assert config.discovery.debounce_after == pytest.approx(0.02)
    path.write_text("mesh: {connectTimeout: soon}\n")
    with pytest.raises(meshconfig.MeshConfigError, match=r"mesh\.connectTimeout"):
        meshconfig.load(path)
    path.write_text("mesh: {outboundTrafficPolicy: {mode: MAYBE}}\n")
    with pytest.raises(meshconfig.MeshConfigError, match="MAYBE"):
        meshconfig.load(path)
    path.write_text("mesh: {conectTimeout: 1s}\n")
    with pytest.raises(meshconfig.MeshConfigError, match="unknown field 'conectTimeout'"):
        meshconfig.load(path)


def test_access_log_file_is_istios_switch(tmp_path):
    path = tmp_path / "pilotfish.yaml"
    assert meshconfig.MeshConfig().mesh.access_log_file == ""  # Istio's default: none
    path.write_text("mesh: {accessLogFile: /dev/stdout}\n")
    assert meshconfig.load(path).mesh.access_log_file == "/dev/stdout"
    path.write_text("mesh: {accessLogFile: /var/log/proxy.log}\n")
    with pytest.raises(meshconfig.MeshConfigError,
                       match=r"mesh\.accessLogFile: '/var/log/proxy.log'"):
        meshconfig.load(path)


def test_access_log_encoding_and_format_are_checked(tmp_path):
    path = tmp_path / "pilotfish.yaml"
    settings = meshconfig.MeshConfig().mesh
    assert (settings.access_log_encoding, settings.access_log_format) == ("TEXT", "")
    path.write_text("mesh: {accessLogEncoding: json, "
                    "accessLogFormat: '{\"c\": \"%RESPONSE_CODE%\"}'}\n")
    loaded = meshconfig.load(path).mesh
    assert loaded.access_log_encoding == "JSON" and "%RESPONSE_CODE%" in loaded.access_log_format
    for text, message in [
            ("accessLogEncoding: XML", r"mesh\.accessLogEncoding: 'XML': expected TEXT or JSON"),
            ("accessLogEncoding: JSON, accessLogFormat: '{oops'",
             r"mesh\.accessLogFormat: not JSON"),
            ("accessLogEncoding: JSON, accessLogFormat: '[1]'",
             r"mesh\.accessLogFormat: expected a JSON object"),
            ("accessLogEncoding: JSON, accessLogFormat: '{\"a\": {\"b\": [1]}}'",
             r"mesh\.accessLogFormat\.a\.b: \[1\]"),
            ("accessLogFormat: 7", r"mesh\.accessLogFormat: expected a string")]:
        path.write_text(f"mesh: {{{text}}}\n")
        with pytest.raises(meshconfig.MeshConfigError, match=message):
            meshconfig.load(path)


def test_compound_durations():
    assert meshconfig.parse_duration("1m30s") == 90
    assert meshconfig.parse_duration("250ms") == 0.25


def test_profile_selects_builtins_with_their_distribution():
    active = plugins.select(meshconfig.MeshConfig())
    names = {(p.group, p.name) for p in active}
    assert {("xds", "cds"), ("xds", "eds"), ("xds", "lds"), ("xds", "rds"),
            ("sources", "files"), ("proxies", "envoy")} <= names
    assert all(p.distribution == "pilotfish" for p in active)


def test_unknown_plugin_name_lists_what_is_installed():
    config = meshconfig.from_dict({"plugins": {"xds": {"add": ["nope"]}}}, "pilotfish.yaml")
    with pytest.raises(plugins.PluginError) as info:
        plugins.select(config)
    message = str(info.value)
    assert "pilotfish.yaml: plugins.xds: unknown plugin 'nope'" in message
    assert "cds (from pilotfish" in message


def test_unknown_group_and_profile_are_errors():
    with pytest.raises(plugins.PluginError, match="unknown plugin group"):
        plugins.select(meshconfig.from_dict({"plugins": {"filters": ["x"]}}))
    with pytest.raises(plugins.PluginError, match="unknown profile 'mesh'"):
        plugins.select(meshconfig.from_dict({"profile": "mesh"}))


def test_proxy_defaults_to_envoy_and_the_mesh_config_may_name_another():
    assert meshconfig.MeshConfig().proxy == "envoy"
    assert meshconfig.from_dict({}).proxy == "envoy"
    config = meshconfig.from_dict({"proxy": "native"}, "pilotfish.yaml")
    assert config.proxy == "native"
    assert plugins.chosen_proxy(config) == ("native", "pilotfish.yaml: proxy: 'native'")
    assert plugins.chosen_proxy(config, "envoy") == ("envoy", "--proxy envoy")  # flag wins
    with pytest.raises(meshconfig.MeshConfigError,
                       match=r"^pilotfish.yaml: proxy: expected a proxy backend's name"):
        meshconfig.from_dict({"proxy": ["native"]}, "pilotfish.yaml")


def test_proxy_no_backend_has_names_file_field_and_value():
    config = meshconfig.from_dict({"proxy": "nginx"}, "pilotfish.yaml")
    with pytest.raises(plugins.PluginError) as caught:
        plugins.chosen_proxy(config)
    message = str(caught.value)
    assert message.startswith("pilotfish.yaml: proxy: 'nginx': no such proxy backend; "
                              "installed in pilotfish.proxies: envoy (from pilotfish ")
    assert "native (from pilotfish " in message
    with pytest.raises(plugins.PluginError, match=r"^--proxy nginx: no such proxy backend"):
        plugins.chosen_proxy(meshconfig.MeshConfig(), "nginx")


def test_remove_and_use():
    config = meshconfig.from_dict({"plugins": {"xds": {"remove": ["rds"]}}})
    assert "rds" not in {p.name for p in plugins.select(config, ["xds"])}
    config = meshconfig.from_dict({"plugins": {"xds": ["cds"]}})
    assert [p.name for p in plugins.select(config, ["xds"])] == ["cds"]


def test_every_hook_has_a_docstring():
    from pilotfish.core import hookspecs

    hooks = [getattr(hookspecs, n) for n in dir(hookspecs) if n.startswith("pilotfish_")]
    assert hooks
    for hook in hooks:
        assert hook.__doc__ and "Fires" in hook.__doc__, hook.__name__


def test_hook_reference_is_up_to_date():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    result = subprocess.run([sys.executable, str(root / "scripts" / "gen_hook_docs.py"),
                             "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
