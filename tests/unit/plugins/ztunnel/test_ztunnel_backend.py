"""The ``ztunnel`` proxy backend: ztunnel's settings as data, ``pilotfish ztunnel`` as the
command (checked against that command's own parser), checks that name the field, and how the
node and the mesh config find it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from pilotfish.agent import ztunnel as ztunnel_command
from pilotfish.core import meshconfig, plugins
from pilotfish.core.proxy_backend import (
    BootstrapError,
    ProxyBackend,
    ProxyOptions,
    ZtunnelOptions,
)
from pilotfish.plugins.ztunnel.backend import ZtunnelBackend, local_url


def options(tmp_path: Path, **extra) -> ProxyOptions:
    own = ZtunnelOptions(zds_socket=tmp_path / "ztunnel.sock",
                         root_cert=tmp_path / "root-cert.pem", token_file=tmp_path / "token",
                         trust_domain="example.org",
                         metrics_address="10.0.0.1:15020", readiness_address="10.0.0.1:15021")
    values = dict(proxy_type="ztunnel", name="ztunnel-pf0", namespace="istio-system",
                  ip="10.0.0.1", service_account="ztunnel",
                  discovery_address="10.0.0.1:15012", config_dir=tmp_path / "zt",
                  admin_port=15100, domain="corp.local", ztunnel=own)
    values.update(extra)
    return ProxyOptions(**values)


def files(tmp_path: Path) -> None:
    (tmp_path / "root-cert.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "token").write_text("token")


def test_its_bootstrap_is_ztunnels_settings(tmp_path):
    assert ZtunnelBackend().bootstrap(options(tmp_path)) == {
        "discovery": "10.0.0.1:15012", "rootCert": f"{tmp_path}/root-cert.pem",
        "tokenFile": f"{tmp_path}/token", "zdsSocket": f"{tmp_path}/ztunnel.sock",
        "node": "", "ip": "10.0.0.1", "name": "ztunnel-pf0", "namespace": "istio-system",
        "serviceAccount": "ztunnel", "trustDomain": "example.org", "clusterId": "Kubernetes",
        "clusterDomain": "corp.local", "dnsResolvConf": "/etc/resolv.conf",
        "adminAddress": "127.0.0.1:15100", "metricsAddress": "10.0.0.1:15020",
        "readinessAddress": "10.0.0.1:15021"}


def test_a_ca_address_is_passed_only_when_given(tmp_path):
    base = options(tmp_path)
    own = ZtunnelOptions(zds_socket=Path("/z"), root_cert=Path("/r"), token_file=Path("/t"),
                         ca_address="10.0.0.9:15012")
    data = ZtunnelBackend().bootstrap(options(tmp_path, ztunnel=own))
    assert data["caAddress"] == "10.0.0.9:15012"
    assert "caAddress" not in ZtunnelBackend().bootstrap(base)


def test_the_command_runs_pilotfish_ztunnel_with_every_setting(tmp_path):
    backend = ZtunnelBackend()
    opts = options(tmp_path)
    argv = backend.command(opts, backend.write_bootstrap(opts))
    cache = opts.config_dir / "pycache"
    assert argv[:9] == [sys.executable, "-OO", "-X", "no_debug_ranges", "-X",
                        f"pycache_prefix={cache}", "-m", "pilotfish.cli", "ztunnel"]
    # the bootstrap compiled ztunnel's modules there, as that interpreter does (opt-2)
    tag = sys.implementation.cache_tag
    compiled = {p.name for p in cache.rglob("*.pyc")}
    # (ztunnel's own modules, asyncio's it serves on, and the stdlib's ssl)
    assert {f"proxy.{tag}.opt-2.pyc", f"ztunnel.{tag}.opt-2.pyc", f"hbone.{tag}.opt-2.pyc",
            f"sslproto.{tag}.opt-2.pyc", f"ssl.{tag}.opt-2.pyc"} <= compiled
    # what `pilotfish ztunnel` itself makes of those flags
    parser = argparse.ArgumentParser()
    ztunnel_command.add_arguments(parser)
    args = parser.parse_args(argv[9:])
    assert (args.discovery, args.root_cert, args.token_file, args.zds_socket) == (
        "10.0.0.1:15012", tmp_path / "root-cert.pem", tmp_path / "token",
        tmp_path / "ztunnel.sock")
    assert (args.name, args.namespace, args.service_account, args.ip) == (
        "ztunnel-pf0", "istio-system", "ztunnel", "10.0.0.1")
    assert (args.trust_domain, args.cluster_domain, args.ca_address) == (
        "example.org", "corp.local", None)
    assert (args.admin_address, args.metrics_address, args.readiness_address) == (
        "127.0.0.1:15100", "10.0.0.1:15020", "10.0.0.1:15021")


def test_it_writes_the_settings_and_checks_them(tmp_path):
    backend = ZtunnelBackend()
    assert isinstance(backend, ProxyBackend)
    files(tmp_path)
    opts = options(tmp_path)
    path = backend.write_bootstrap(opts)
    assert path == tmp_path / "zt" / "ztunnel.json"
    assert json.loads(path.read_text()) == backend.bootstrap(opts)
    backend.check(path)


@pytest.mark.parametrize(("change", "message"), [
    ({"discovery": "istiod"}, r"ztunnel\.json: discovery 'istiod': expected HOST:PORT"),
    ({"metricsAddress": "10.0.0.1:0"}, r"metricsAddress '10.0.0.1:0': expected HOST:PORT"),
    ({"ip": "node-a"}, r"ip: 'node-a' is not an IP address"),
    ({"rootCert": "/nowhere/root.pem"}, r"rootCert: /nowhere/root.pem: no such file"),
    ({"name": ""}, r"ztunnel\.json: name: empty"),
    ({"trustDomain": 5}, r"trustDomain: expected a string, got 5"),
    ({"logLevel": "debug"}, r"logLevel: unknown setting; expected one of discovery, "),
])
def test_check_names_the_field(tmp_path, change, message):
    backend = ZtunnelBackend()
    files(tmp_path)
    path = backend.write_bootstrap(options(tmp_path))
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(BootstrapError, match=message):
        backend.check(path)


def test_check_names_missing_settings_and_bad_files(tmp_path):
    path = tmp_path / "ztunnel.json"
    path.write_text(json.dumps({"discovery": "10.0.0.1:15012"}))
    with pytest.raises(BootstrapError) as caught:
        ZtunnelBackend().check(path)
    lines = str(caught.value).splitlines()
    assert f"{path}: rootCert: required" in lines
    assert f"{path}: readinessAddress: required" in lines
    path.write_text("[1]")
    with pytest.raises(BootstrapError, match="expected a JSON object of ztunnel settings"):
        ZtunnelBackend().check(path)
    path.write_text("{")
    with pytest.raises(BootstrapError, match=r"ztunnel\.json: not JSON"):
        ZtunnelBackend().check(path)


def test_ztunnel_options_check_their_addresses():
    with pytest.raises(ValueError, match=r"readiness_address '15021': expected HOST:PORT"):
        ZtunnelOptions(zds_socket=Path("/z"), root_cert=Path("/r"), token_file=Path("/t"),
                       readiness_address="15021")


def test_the_admin_asks_wildcard_addresses_on_loopback():
    assert local_url("0.0.0.0:15020") == "http://127.0.0.1:15020"
    assert local_url("[::]:15020") == "http://[::1]:15020"
    assert local_url("10.0.0.1:15021") == "http://10.0.0.1:15021"


def test_the_ambient_profile_enables_it_as_the_mesh_configs_ztunnel():
    config = meshconfig.from_dict({"profile": "ambient"}, "pilotfish.yaml")
    assert config.ztunnel == "ztunnel"
    assert isinstance(plugins.active_proxy(config, field="ztunnel"), ZtunnelBackend)


def test_a_ztunnel_the_config_does_not_enable_or_nobody_installed_is_an_error():
    sidecar = meshconfig.from_dict({"profile": "sidecar"}, "pilotfish.yaml")
    with pytest.raises(plugins.PluginError, match=r"^pilotfish.yaml: ztunnel: 'ztunnel': "
                                                  r"installed but not enabled"):
        plugins.active_proxy(sidecar, field="ztunnel")
    other = meshconfig.from_dict({"profile": "ambient", "ztunnel": "rztunnel"}, "pilotfish.yaml")
    with pytest.raises(plugins.PluginError, match=r"^pilotfish.yaml: ztunnel: 'rztunnel': no "
                                                  r"such proxy backend; installed in "
                                                  r"pilotfish.proxies: envoy"):
        plugins.active_proxy(other, field="ztunnel")
    with pytest.raises(meshconfig.MeshConfigError, match=r"pilotfish.yaml: ztunnel: expected "
                                                         r"a proxy backend's name"):
        meshconfig.from_dict({"ztunnel": ""}, "pilotfish.yaml")


def test_proxy_type_ztunnel_and_ztunnel_options_go_together(tmp_path):
    with pytest.raises(ValueError, match=r"^proxy_type: expected one of sidecar, router, "
                                         r"waypoint, got 'ztunnel' without ztunnel options"):
        options(tmp_path, ztunnel=None)
    with pytest.raises(ValueError, match=r"^ztunnel: options for a ztunnel, but proxy_type "
                                         r"is 'sidecar'"):
        options(tmp_path, proxy_type="sidecar")
