"""Where the CA's settings come from: mesh config, discovery flags, defaults."""

from __future__ import annotations

import pytest

from pilotfish.cli import main as cli
from pilotfish.core import meshconfig
from pilotfish.core.output import CommandError
from pilotfish.core.security.files import SYSTEM_STATE_DIR, default_state_dir
from pilotfish.discovery.command import cert_settings, kube_settings
from pilotfish.discovery.secure_xds import serving_names


def parse(*argv: str):
    return cli.build_parser().parse_args(["discovery", *argv])


def test_workload_ttls_default_to_istios_and_come_from_mesh_config():
    assert meshconfig.MeshConfig().discovery.workload_cert_ttl == 86400
    assert meshconfig.MeshConfig().discovery.max_workload_cert_ttl == 90 * 86400
    config = meshconfig.from_dict({"discovery": {"workloadCertTtl": "2m",
                                                 "maxWorkloadCertTtl": "48h"}})
    settings = cert_settings(parse("--state-dir", "/tmp/x"), config)
    assert (settings.workload_ttl, settings.max_workload_ttl) == (120, 48 * 3600)


def test_flags_override_the_mesh_config():
    settings = cert_settings(parse("--workload-cert-ttl", "1h", "--max-workload-cert-ttl",
                                        "2h", "--state-dir", "/s"), meshconfig.MeshConfig())
    assert (settings.workload_ttl, settings.max_workload_ttl) == (3600, 7200)
    assert str(settings.state_dir) == "/s" and settings.trust_domain == "cluster.local"


def test_default_ttl_above_the_maximum_is_an_error():
    with pytest.raises(meshconfig.MeshConfigError, match="workloadCertTtl"):
        meshconfig.from_dict({"discovery": {"workloadCertTtl": "100h",
                                            "maxWorkloadCertTtl": "10h"}})
    with pytest.raises(CommandError, match="at most the maximum"):
        cert_settings(parse("--workload-cert-ttl", "3h", "--max-workload-cert-ttl", "1h"),
                           meshconfig.MeshConfig())


def test_missing_ca_dir_is_named(tmp_path):
    with pytest.raises(CommandError, match=r"--ca-dir .*: not a directory"):
        cert_settings(parse("--ca-dir", str(tmp_path / "nope")), meshconfig.MeshConfig())


def test_state_dir_default_depends_on_the_user(monkeypatch, tmp_path):
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert default_state_dir() == SYSTEM_STATE_DIR
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "pilotfish" / "discovery"


def test_serving_certificate_names():
    dns = ["istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local",
           "pilotfish-discovery"]
    assert serving_names("10.250.0.1:15012") == (dns, ["10.250.0.1"])
    assert serving_names("0.0.0.0:15012") == (dns, ["127.0.0.1"])
    assert serving_names("localhost:15012") == ([*dns, "localhost"], [])


KUBECONFIG = """\
apiVersion: v1
kind: Config
current-context: one
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: one, context: {cluster: c, user: u}}, {name: two, context: {cluster: c,
  user: u}}]
"""


def test_a_kubeconfig_selects_the_kubernetes_source(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    settings = kube_settings(parse("--kubeconfig", str(path), "--context", "two"))
    assert settings == {"kubeconfig": path, "kube_context": "two", "in_cluster": False}
    # Outside a pod, no flag: no cluster.
    assert kube_settings(parse("--config-dir", str(tmp_path)))["kubeconfig"] is None


@pytest.mark.parametrize(("argv", "message"), [
    (["--context", "two"], "--context needs --kubeconfig"),
    (["--kubeconfig", "{tmp}/nope"], "--kubeconfig .*/nope: no such file"),
    (["--kubeconfig", "{tmp}/kubeconfig", "--context", "three"],
     "--kubeconfig .*/kubeconfig: .*three"),
])
def test_a_kubeconfig_that_cannot_be_used_is_the_commands_error(tmp_path, argv, message):
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    with pytest.raises(CommandError, match=message):
        kube_settings(parse(*(a.format(tmp=tmp_path) for a in argv)))


def test_the_webhooks_need_the_ca_and_good_injection_values(tmp_path, capsys):
    assert cli.main(["discovery", "--config-dir", str(tmp_path), "--secure-xds-address", "",
                     "--webhook-address", "127.0.0.1:0"]) == 2
    assert "--webhook-address needs --secure-xds-address" in capsys.readouterr().err
    mesh = tmp_path / "pilotfish.yaml"
    mesh.write_text("injection: {global: {proxy: {statusPort: lots}}}\n")
    assert cli.main(["discovery", "--config-dir", str(tmp_path), "--mesh-config", str(mesh),
                     "--state-dir", str(tmp_path / "state"), "--xds-address", "127.0.0.1:0",
                     "--secure-xds-address", "127.0.0.1:0", "--debug-address", "",
                     "--webhook-address", "127.0.0.1:0"]) == 2
    assert (f"{mesh}: injection values: global.proxy.statusPort: expected a whole number, "
            "got 'lots'") in capsys.readouterr().err


def test_a_lease_duration_must_be_positive(tmp_path, capsys):
    assert cli.main(["discovery", "--config-dir", str(tmp_path), "--secure-xds-address", "",
                     "--lease-duration", "0"]) == 2
    assert "--lease-duration 0: must be positive" in capsys.readouterr().err
