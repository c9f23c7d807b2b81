"""Real Envoy (BoringSSL) as the TLS client of 15012: ADS over mTLS with a workload
certificate from discovery's own CA, checking discovery by its istiod name and root.

The certificate files are static here; the agent serves them over SDS (its own tests).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilotfish.core.security import tokens
from pilotfish.plugins.envoy.backend import envoy_binary
from pilotfish.testing.certs import create_certificate, make_csr
from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import Process, free_port, http, wait_until

pytestmark = pytest.mark.envoy

CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
"""
CLUSTER = "outbound|9080||reviews.shop.svc.cluster.local"


def bootstrap(mesh: LocalMesh, certs: Path, admin_port: int) -> dict[str, Any]:
    tls = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/"
                     "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "istiod.istio-system.svc",
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [{
                    "certificate_chain": {"filename": str(certs / "cert-chain.pem")},
                    "private_key": {"filename": str(certs / "key.pem")}}],
                "validation_context": {
                    "trusted_ca": {"filename": str(mesh.root_cert)},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": "istiod.istio-system.svc"}}]},
            },
        },
    }
    source = {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"}
    return {
        "node": {"id": "sidecar~127.0.0.1~reviews-v1-0.shop~shop.svc.cluster.local",
                 "cluster": "reviews.shop"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]},
            "cds_config": source, "lds_config": source,
        },
        "static_resources": {"clusters": [{
            "name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": mesh.secure_port}}}}]}]},
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/"
                             "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}}},
            "transport_socket": tls,
        }]},
    }


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    workdir = tmp_path_factory.mktemp("secure-envoy")
    private, public = tokens.generate_keypair()
    (workdir / "token-key.pem").write_bytes(public)
    with LocalMesh(workdir) as mesh:
        mesh.write("shop.yaml", CONFIG)
        mesh.start_discovery(token_key=workdir / "token-key.pem")
        (workdir / "node-key.pem").write_bytes(private)
        yield mesh


def issue_files(mesh: LocalMesh, target: Path) -> None:
    """What an agent does: a CSR with the pod token, the chain and key written out."""
    private = (mesh.workdir / "node-key.pem").read_bytes()
    csr, key = make_csr("ec")
    chain = create_certificate(mesh.secure_address, mesh.root_cert.read_bytes(), csr,
                               token=tokens.issue(private, "shop", "reviews", "r-0", 600))
    target.mkdir()
    (target / "cert-chain.pem").write_text("".join(chain[:-1]))
    (target / "key.pem").write_text(key)


def test_envoy_gets_config_over_mtls_and_discovery_sees_its_identity(mesh: LocalMesh):
    certs = mesh.workdir / "envoy-certs"
    issue_files(mesh, certs)
    admin = free_port()
    config = mesh.workdir / "envoy.json"
    config.write_text(json.dumps(bootstrap(mesh, certs, admin)))
    envoy = Process("envoy", [str(envoy_binary()), "-c", str(config), "--base-id",
                              str(admin), "-l", "warning"], mesh.workdir / "envoy.log")
    mesh.processes.append(envoy.start())

    def has_cluster() -> bool:
        envoy.check_running()
        return CLUSTER in http(f"http://127.0.0.1:{admin}/clusters", timeout=1).body.decode()

    wait_until(has_cluster, 20, what=f"Envoy to get {CLUSTER} over 15012")
    synced = mesh.wait_synced("reviews-v1-0.shop")
    assert synced["identity"] == "spiffe://cluster.local/ns/shop/sa/reviews"
