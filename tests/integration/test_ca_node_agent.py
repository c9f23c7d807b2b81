"""A node agent (ztunnel) asks a real discovery's CA, over TLS and gRPC with the agent's
``CaClient``, for the certificates of the workloads on its node (``ImpersonatedIdentity``),
proving itself with its own pod token: granted for a pod on its node, refused, saying why,
for one on another node and for a caller that is not a node agent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from pilotfish.core.security import tokens
from pilotfish.core.security.ca_client import CaClient, CaError
from pilotfish.testing.certs import make_csr, uri_sans, verify_chain
from pilotfish.testing.mesh import LocalMesh

REVIEWS = "spiffe://cluster.local/ns/shop/sa/reviews"
RATINGS = "spiffe://cluster.local/ns/shop/sa/ratings"


def pod(name: str, namespace: str, account: str, node: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{nodeName: {node}, serviceAccountName: {account}, containers: [{{name: c}}]}}
status: {{phase: Running, podIP: 10.0.0.{len(name)}}}
"""


PODS = "---".join([pod("ztunnel-a", "istio-system", "ztunnel", "node-a"),
                   pod("reviews-0", "shop", "reviews", "node-a"),
                   pod("ratings-0", "shop", "ratings", "node-b")])


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalMesh, bytes, Path]]:
    tmp = tmp_path_factory.mktemp("node-agent")
    private, public = tokens.generate_keypair()
    (tmp / "token-key.pem").write_bytes(public)
    with LocalMesh(tmp / "mesh") as mesh:
        mesh.write("pods.yaml", PODS)
        mesh.start_discovery(token_key=tmp / "token-key.pem")
        yield mesh, private, tmp


def client(mesh: tuple[LocalMesh, bytes, Path], namespace: str, account: str,
           pod_name: str) -> CaClient:
    local, private, tmp = mesh
    token_file = tmp / f"{pod_name}.token"
    token_file.write_text(tokens.issue(private, namespace, account, pod_name, 600))
    return CaClient(local.secure_address, local.root_cert, token_file)


def ask(ca: CaClient, identity: str) -> list[str]:
    csr, _ = make_csr("ec", uris=[identity])

    async def call() -> list[str]:
        return await ca.create_certificate(csr, 3600, None, time.time(), impersonate=identity)

    return anyio.run(call)


def test_the_node_agent_gets_a_certificate_for_a_pod_on_its_node(mesh):
    chain = ask(client(mesh, "istio-system", "ztunnel", "ztunnel-a"), REVIEWS)
    assert uri_sans(verify_chain(chain, mesh[0].root_cert.read_text())) == [REVIEWS]


def test_an_identity_on_another_node_is_refused(mesh):
    with pytest.raises(CaError) as info:
        ask(client(mesh, "istio-system", "ztunnel", "ztunnel-a"), RATINGS)
    assert "PERMISSION_DENIED" in str(info.value)
    assert f"identity {RATINGS} is not on the node agent's node: no pod of service account " \
        "shop/ratings runs on node 'node-a'" in str(info.value)


def test_a_workload_may_not_ask_for_another_identity(mesh):
    with pytest.raises(CaError) as info:
        ask(client(mesh, "shop", "reviews", "reviews-0"), RATINGS)
    assert "caller shop/reviews is not a node agent" in str(info.value)


def test_a_node_agent_token_for_an_unknown_pod_is_refused(mesh):
    with pytest.raises(CaError, match="its pod istio-system/ztunnel-z is not known"):
        ask(client(mesh, "istio-system", "ztunnel", "ztunnel-z"), REVIEWS)


def test_asking_as_a_node_agent_needs_a_pod_token(mesh):
    local = mesh[0]
    with pytest.raises(CaError, match="needs the agent's pod token"):
        ask(CaClient(local.secure_address, local.root_cert), REVIEWS)
