"""The agent's identity flags: what turns SDS and xDS over mTLS on, and clear refusals."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pilotfish.agent import command as agent
from pilotfish.agent import identity as agent_identity
from pilotfish.agent.identity import IdentityError
from pilotfish.core.proxy_backend import ProxyOptions
from pilotfish.core.security import pki


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    agent.add_arguments(parser)
    return parser.parse_args(["--name", "web-1", "--namespace", "shop", "--ip", "10.0.0.5",
                              "--service-account", "web", *argv])


@pytest.fixture
def root(tmp_path: Path) -> Path:
    cert, _ = pki.self_signed_root("cluster.local", 0)
    path = tmp_path / "root-cert.pem"
    path.write_text(pki.cert_pem(cert))
    return path


def test_without_a_token_nothing_changes():
    assert agent_identity.settings_from_args(
        parse("--discovery", "10.96.0.1:15010"), "cluster.local") is None


def test_a_token_gets_a_certificate_from_the_discovery_host_on_15012(root: Path):
    settings = agent_identity.settings_from_args(
        parse("--discovery", "istiod.istio-system.svc:15010", "--token-file", "/t",
              "--root-cert", str(root)), "example.org")
    assert settings is not None
    assert settings.ca_address == "istiod.istio-system.svc:15012"
    assert settings.spiffe_id == "spiffe://example.org/ns/shop/sa/web"
    assert settings.cert_ttl == 86400 and settings.key_type == "ec"
    assert not settings.xds_tls


def test_discovery_on_15012_means_xds_over_mtls(root: Path):
    settings = agent_identity.settings_from_args(
        parse("--discovery", "[fd00::1]:15012", "--token-file", "/t", "--root-cert", str(root),
              "--cert-ttl", "20s", "--key-type", "rsa"), "cluster.local")
    assert settings is not None and settings.xds_tls
    assert settings.ca_address == "[fd00::1]:15012"
    assert (settings.cert_ttl, settings.key_type) == (20, "rsa")


@pytest.mark.parametrize(("argv", "message"), [
    (["--discovery", "d:15012"], r"--discovery d:15012 \(port 15012\) needs --token-file"),
    (["--discovery", "d:15010", "--xds-tls"], "--xds-tls needs --token-file"),
    (["--discovery", "d:15010", "--token-file", "/t"], "--token-file needs --root-cert"),
    (["--discovery", "d:15010", "--token-file", "/t", "--root-cert", "/nonexistent"],
     "--root-cert /nonexistent: No such file"),
    (["--discovery", "d:15010", "--token-file", "/t", "--root-cert", "ROOT",
      "--cert-ttl", "soon"], "--cert-ttl: expected a duration"),
    (["--discovery", "d:15010", "--token-file", "/t", "--root-cert", "ROOT",
      "--ca-address", "nowhere"], "--ca-address 'nowhere': expected HOST:PORT"),
])
def test_flags_that_cannot_work_are_refused_by_name(argv: list[str], message: str,
                                                    root: Path):
    args = parse(*(str(root) if a == "ROOT" else a for a in argv))
    with pytest.raises(IdentityError, match=message):
        agent_identity.settings_from_args(args, "cluster.local")


def test_a_root_file_that_is_not_pem_is_refused(tmp_path: Path):
    bad = tmp_path / "root.pem"
    bad.write_text("not a certificate")
    args = parse("--discovery", "d:15010", "--token-file", "/t", "--root-cert", str(bad))
    with pytest.raises(IdentityError, match="no PEM certificate could be read"):
        agent_identity.settings_from_args(args, "cluster.local")


def test_socket_paths_must_fit_a_unix_socket(tmp_path: Path):
    options = ProxyOptions(name="w", namespace="n", ip="10.0.0.5", discovery_address="d:1",
                           config_dir=tmp_path / ("x" * 120))
    with pytest.raises(IdentityError, match=r"longer than 107 bytes.*shorter directory"):
        agent_identity.check_socket_paths(options)


def test_output_certs_needs_a_token_and_defaults_to_the_environment(monkeypatch, root: Path):
    with pytest.raises(IdentityError,
                       match=r"--output-certs /c \(or OUTPUT_CERTS\) needs --token-file"):
        agent_identity.settings_from_args(
            parse("--discovery", "10.96.0.1:15010", "--output-certs", "/c"), "cluster.local")
    monkeypatch.setenv("OUTPUT_CERTS", "/var/lib/istio/data")  # as Istio's template sets it
    args = parse("--discovery", "10.96.0.1:15010", "--token-file", "/t",
                 "--root-cert", str(root))
    assert args.output_certs == Path("/var/lib/istio/data")
    assert agent.options_from_args(args, agent.meshconfig.MeshConfig()).output_certs == \
        Path("/var/lib/istio/data")
