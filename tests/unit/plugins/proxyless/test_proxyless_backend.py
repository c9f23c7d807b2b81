"""The ``grpc`` proxy backend: gRPC's xDS bootstrap, nothing to run, readiness by files."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from pilotfish.core.proxy_backend import BootstrapError, ProxyBackend, ProxyError, ProxyOptions
from pilotfish.plugins.proxyless.backend import ProxylessGrpcBackend, bootstrap


def options(tmp_path: Path, **extra) -> ProxyOptions:
    return ProxyOptions(name="client-1", namespace="grpc", ip="10.0.0.9",
                        discovery_address="10.96.0.1:15012", config_dir=tmp_path / "xds",
                        service_account="client", labels={"app": "client"}, **extra)


def test_over_mtls_the_app_dials_the_agents_relay_with_the_certificate_files(tmp_path):
    data = bootstrap(options(tmp_path, xds_tls=True, output_certs=tmp_path / "certs"), "1.0")
    assert data["xds_servers"] == [{
        "server_uri": f"unix://{tmp_path}/xds/XDS", "channel_creds": [{"type": "insecure"}],
        "server_features": ["xds_v3"]}]
    assert data["node"]["id"] == "sidecar~10.0.0.9~client-1.grpc~grpc.svc.cluster.local"
    meta = data["node"]["metadata"]
    assert meta["GENERATOR"] == "grpc"
    assert (meta["NAMESPACE"], meta["SERVICE_ACCOUNT"], meta["LABELS"]) == (
        "grpc", "client", {"app": "client"})
    assert "PILOTFISH_ADMIN" not in meta  # there is no admin API to point at
    assert data["certificate_providers"] == {"default": {"plugin_name": "file_watcher",
                                                         "config": {
        "certificate_file": f"{tmp_path}/certs/cert-chain.pem",
        "private_key_file": f"{tmp_path}/certs/key.pem",
        "ca_certificate_file": f"{tmp_path}/certs/root-cert.pem",
        "refresh_interval": "900s"}}}
    assert data["server_listener_resource_name_template"] == \
        "xds.istio.io/grpc/lds/inbound/%s"


def test_without_mtls_the_app_dials_discovery_and_has_no_certificate(tmp_path):
    data = bootstrap(options(tmp_path), "1.0")
    assert data["xds_servers"][0]["server_uri"] == "10.96.0.1:15012"
    assert "certificate_providers" not in data


def test_a_locality_goes_into_the_node(tmp_path):
    data = bootstrap(options(tmp_path, locality="us-east/us-east-1a"), "1.0")
    assert data["node"]["locality"] == {"region": "us-east", "zone": "us-east-1a",
                                        "sub_zone": ""}


def test_it_writes_and_checks_the_bootstrap_and_runs_nothing(tmp_path):
    backend = ProxylessGrpcBackend()
    assert isinstance(backend, ProxyBackend)
    opts = options(tmp_path)
    path = backend.write_bootstrap(opts)
    assert path == tmp_path / "xds" / "grpc-bootstrap.json"
    assert json.loads(path.read_text()) == backend.bootstrap(opts)
    backend.check(path)
    assert backend.command(opts, path) is None
    path.write_text('{"node": {}}')
    with pytest.raises(BootstrapError, match="not a gRPC xDS bootstrap"):
        backend.check(path)


def test_it_is_ready_once_the_certificate_files_are_there(tmp_path):
    certs = tmp_path / "certs"
    admin = ProxylessGrpcBackend().admin(options(tmp_path, output_certs=certs))

    async def secrets() -> frozenset[str]:
        return (await admin.status(full=True)).secrets

    assert anyio.run(secrets) == frozenset()
    certs.mkdir()
    for name in ("cert-chain.pem", "key.pem"):
        (certs / name).write_text("x")
    assert anyio.run(secrets) == frozenset()
    (certs / "root-cert.pem").write_text("x")
    assert anyio.run(secrets) == {"default", "ROOTCA"}


def test_there_is_no_config_dump_to_give(tmp_path):
    admin = ProxylessGrpcBackend().admin(options(tmp_path))
    with pytest.raises(ProxyError, match="the app holds its xDS configuration"):
        anyio.run(admin.config_dump)
