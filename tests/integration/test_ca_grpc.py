"""The CA and secure xDS on 15012, against a real discovery process over real TLS and gRPC.

A pod token gets a certificate for the pod's own SPIFFE ID; asking for someone else's, or
sending a malformed CSR, gets a clear refusal while discovery keeps serving; the issued
certificate then authenticates ADS over mTLS; ADS without credentials is refused.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from pilotfish.core.security import tokens
from pilotfish.core.security.provider import CertSettings
from pilotfish.core.xds import types
from pilotfish.plugins.certs import istio_ca
from pilotfish.testing import certs
from pilotfish.testing.certs import make_csr, uri_sans, verify_chain
from pilotfish.testing.mesh import LocalMesh

SERVER_NAME = "istiod.istio-system.svc"
REVIEWS = "spiffe://cluster.local/ns/shop/sa/reviews"
CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
"""


@attrs.frozen
class Node:
    """The node's side: its key pair, with which it issues pod tokens."""

    private_key: bytes
    public_key_file: Path

    def token(self, namespace: str = "shop", service_account: str = "reviews",
              pod: str = "reviews-v1-0", ttl: float = 600, **kw: Any) -> str:
        return tokens.issue(self.private_key, namespace, service_account, pod, ttl, **kw)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Node:
    private, public = tokens.generate_keypair()
    path = tmp_path_factory.mktemp("node") / "token-key.pem"
    path.write_bytes(public)
    return Node(private, path)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, node: Node) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path_factory.mktemp("ca")) as mesh:
        mesh.write("shop.yaml", CONFIG)
        mesh.start_discovery(token_key=node.public_key_file)
        yield mesh


def credentials(mesh: LocalMesh, key: str | None = None,
                chain: Sequence[str] = ()) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        mesh.root_cert.read_bytes(), key.encode() if key else None,
        "".join(chain).encode() if chain else None)


def channel(mesh: LocalMesh, creds: grpc.ChannelCredentials) -> grpc.aio.Channel:
    # Verify discovery's certificate by its istiod DNS name, as pilot-agent does.
    return grpc.aio.secure_channel(mesh.secure_address, creds,
                                   options=[("grpc.ssl_target_name_override", SERVER_NAME)])


def create_certificate(mesh: LocalMesh, csr: str, token: str | None = None,
                       validity: int = 0, key: str | None = None, chain: Sequence[str] = ()
                       ) -> list[str]:
    return certs.create_certificate(mesh.secure_address, mesh.root_cert.read_bytes(), csr,
                                    token=token, validity=validity, key_pem=key, chain=chain)


def refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    error: Any = info.value
    return error.code(), error.details() or ""


def ads_cds(mesh: LocalMesh, creds: grpc.ChannelCredentials, *, namespace: str = "shop",
            token: str | None = None) -> discovery_pb2.DiscoveryResponse:
    """One SotW CDS request on 15012 as proxy reviews-v1-0.NAMESPACE; the first response."""
    async def call() -> discovery_pb2.DiscoveryResponse:
        async with channel(mesh, creds) as ch:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch)
            metadata = [("authorization", f"Bearer {token}")] if token else []
            stream = stub.StreamAggregatedResources(metadata=metadata, timeout=10)
            node_id = f"sidecar~127.0.0.1~reviews-v1-0.{namespace}~{namespace}.svc.cluster.local"
            await stream.write(discovery_pb2.DiscoveryRequest(
                node=base_pb2.Node(id=node_id), type_url=types.CLUSTER))
            response = await stream.read()
            stream.cancel()
            assert isinstance(response, discovery_pb2.DiscoveryResponse), response
            return response

    return asyncio.run(call())


@pytest.fixture(scope="module")
def workload(mesh: LocalMesh, node: Node) -> tuple[str, list[str]]:
    """A key and the chain CreateCertificate gave for it with the pod's token."""
    csr, key = make_csr("ec")
    return key, create_certificate(mesh, csr, node.token())


def test_root_is_written_for_the_node_readable_by_all(mesh: LocalMesh):
    assert stat.S_IMODE(os.stat(mesh.root_cert).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(mesh.state_dir / "ca-key.pem").st_mode) == 0o600


def test_token_gets_a_certificate_for_the_pods_spiffe_id(mesh: LocalMesh,
                                                         workload: tuple[str, list[str]]):
    _, chain = workload
    leaf = verify_chain(chain, mesh.root_cert.read_text())
    assert uri_sans(leaf) == [REVIEWS]
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime.total_seconds() == 86400 + 120  # the default 24h, plus the skew margin


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_requested_ttl_and_both_key_types(mesh: LocalMesh, node: Node, kind: str):
    leaf = verify_chain(create_certificate(mesh, make_csr(kind)[0], node.token(), validity=120),
                        mesh.root_cert.read_text())
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds() == 240


def test_asking_for_another_service_accounts_identity_is_refused(mesh: LocalMesh, node: Node):
    other = "spiffe://cluster.local/ns/shop/sa/admin"
    code, message = refusal(lambda: create_certificate(mesh, make_csr(uris=[other])[0],
                                                       node.token()))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert f"CSR asks for identity {other} but the caller is authenticated as {REVIEWS}" \
        in message


def test_malformed_csr_gets_a_clear_error_and_discovery_keeps_serving(mesh: LocalMesh,
                                                                      node: Node):
    for csr, expected in [("garbage", "CSR is not PEM"),
                          ("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                           "-----END CERTIFICATE REQUEST-----\n", "CSR cannot be parsed")]:
        code, message = refusal(lambda csr=csr: create_certificate(mesh, csr, node.token()))
        assert code is grpc.StatusCode.INVALID_ARGUMENT and expected in message
    mesh.processes[0].check_running()
    leaf = verify_chain(create_certificate(mesh, make_csr()[0], node.token()),
                        mesh.root_cert.read_text())
    assert uri_sans(leaf) == [REVIEWS]


def test_ttl_above_the_maximum_is_refused(mesh: LocalMesh, node: Node):
    code, message = refusal(lambda: create_certificate(mesh, make_csr()[0], node.token(),
                                                       validity=91 * 86400))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "requested TTL 2184h0m0s is greater than the max allowed TTL 2160h0m0s" in message


@pytest.mark.parametrize(("make_token", "expected"), [
    (lambda node: tokens.issue(tokens.generate_keypair()[0], "shop", "reviews", "p", 60),
     "signature does not verify"),
    (lambda node: node.token(ttl=60, now=1_000_000_000), "token expired"),
    (lambda node: node.token(audience=["kubernetes"]), "audience is not 'istio-ca'"),
    (lambda node: "garbage", "not a valid JWT"),
    (lambda node: None, "no credentials"),
])
def test_bad_tokens_are_unauthenticated(mesh: LocalMesh, node: Node, make_token: Any,
                                        expected: str):
    code, message = refusal(lambda: create_certificate(mesh, make_csr()[0], make_token(node)))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert expected in message


def test_workload_certificate_renews_itself_without_a_token(mesh: LocalMesh,
                                                            workload: tuple[str, list[str]]):
    key, chain = workload
    renewed = create_certificate(mesh, make_csr("rsa")[0], key=key, chain=chain[:-1])
    assert uri_sans(verify_chain(renewed, mesh.root_cert.read_text())) == [REVIEWS]


def test_ads_over_mtls_with_the_issued_certificate(mesh: LocalMesh,
                                                   workload: tuple[str, list[str]]):
    key, chain = workload
    response = ads_cds(mesh, credentials(mesh, key, chain[:-1]))
    names = {r.type_url for r in response.resources}
    assert response.type_url == types.CLUSTER and names == {types.CLUSTER}
    assert len(response.resources) >= 2  # reviews' cluster, passthrough, blackhole


def test_ads_with_a_bearer_token(mesh: LocalMesh, node: Node):
    assert ads_cds(mesh, credentials(mesh), token=node.token()).resources


def test_ads_without_credentials_is_unauthenticated(mesh: LocalMesh):
    code, message = refusal(lambda: ads_cds(mesh, credentials(mesh)))
    assert code is grpc.StatusCode.UNAUTHENTICATED and "no credentials" in message


def test_ads_as_a_proxy_of_another_namespace_is_denied(mesh: LocalMesh,
                                                       workload: tuple[str, list[str]]):
    key, chain = workload
    code, message = refusal(lambda: ads_cds(mesh, credentials(mesh, key, chain[:-1]),
                                            namespace="bank"))
    assert code is grpc.StatusCode.PERMISSION_DENIED and "namespace 'bank'" in message


def test_certificate_from_another_ca_fails_the_handshake(mesh: LocalMesh, tmp_path: Path):
    stranger = istio_ca.pilotfish_cert_provider(CertSettings(state_dir=tmp_path))
    serving = stranger.serving_certificate(["x"], [], time.time())
    code, _ = refusal(lambda: ads_cds(mesh, credentials(mesh, serving.key_pem,
                                                        [serving.chain_pem])))
    assert code is grpc.StatusCode.UNAVAILABLE
    mesh.processes[0].check_running()


def test_plaintext_15010_is_unchanged(mesh: LocalMesh):
    async def call() -> int:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.xds_port}") as ch:
            stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).StreamAggregatedResources(
                timeout=10)
            await stream.write(discovery_pb2.DiscoveryRequest(
                node=base_pb2.Node(id="sidecar~127.0.0.1~a-0.other~other.svc.cluster.local"),
                type_url=types.CLUSTER))
            response = await stream.read()
            stream.cancel()
            return len(response.resources)

    assert asyncio.run(call()) >= 2


def test_syncz_shows_the_callers_identity(mesh: LocalMesh, workload: tuple[str, list[str]]):
    key, chain = workload

    async def hold() -> list[dict[str, Any]]:
        async with channel(mesh, credentials(mesh, key, chain[:-1])) as ch:
            stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).StreamAggregatedResources()
            await stream.write(discovery_pb2.DiscoveryRequest(
                node=base_pb2.Node(id="sidecar~127.0.0.1~reviews-v1-0.shop~shop.svc.cluster.local"),
                type_url=types.CLUSTER))
            await stream.read()
            items = await asyncio.to_thread(mesh.syncz)
            stream.cancel()
            return items

    items = [i for i in asyncio.run(hold()) if i["proxy"] == "reviews-v1-0.shop"]
    assert [i["identity"] for i in items] == [REVIEWS]


def test_restart_keeps_the_root_and_old_certificates_work(mesh: LocalMesh, node: Node,
                                                          workload: tuple[str, list[str]]):
    root = mesh.root_cert.read_text()
    mesh.stop()
    mesh.start_discovery(token_key=node.public_key_file)
    assert mesh.root_cert.read_text() == root
    key, chain = workload
    assert ads_cds(mesh, credentials(mesh, key, chain[:-1])).resources


def test_plaintext_or_half_open_clients_do_not_stop_15012(mesh: LocalMesh, node: Node):
    host, port = mesh.secure_address.split(":")
    with socket.create_connection((host, int(port))) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        plain.settimeout(5)
        received = b""
        while chunk := plain.recv(100):
            received += chunk
        assert len(received) < 100  # at most a TLS alert, then the connection is closed
    idle = socket.create_connection((host, int(port)))  # never says anything
    try:
        chain = create_certificate(mesh, make_csr()[0], node.token())
        assert uri_sans(verify_chain(chain, mesh.root_cert.read_text())) == [REVIEWS]
    finally:
        idle.close()
