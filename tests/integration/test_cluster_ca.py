"""``pilotfish discovery --kubeconfig``: the CA on a cluster, as istiod runs it, against the
test kit's fake API server driven through the official client.

Two discovery processes start against one cluster: the first stores a self-signed root in
``istio-ca-secret``, the second finds it and signs with it; both publish it as the
``istio-ca-root-cert`` ConfigMap and patch the webhooks' ``caBundle``. A workload's projected
token (checked by TokenReview) gets a certificate for its own service account, and nothing
else; bad tokens are refused saying why.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import grpc
import kubernetes
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from pilotfish.core.xds import types
from pilotfish.discovery.inject.policy import webhook_configurations
from pilotfish.testing.certs import create_certificate, make_csr, uri_sans, verify_chain
from pilotfish.testing.kube import FakeKubeApi, running
from pilotfish.testing.kube.tokens import service_account
from pilotfish.testing.mesh import LocalMesh

REVIEWS = "spiffe://cluster.local/ns/shop/sa/reviews"
RATINGS = "spiffe://cluster.local/ns/shop/sa/ratings"


@attrs.define
class Cluster:
    api: FakeKubeApi
    client: kubernetes.client.ApiClient
    meshes: tuple[LocalMesh, LocalMesh]

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.client)

    def root_configmap(self, namespace: str) -> str:
        cm = self.core.read_namespaced_config_map("istio-ca-root-cert", namespace)
        return str(cm.data["root-cert.pem"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp: Path = tmp_path_factory.mktemp("cluster-ca")
    with running(tmp / "api") as api, \
            kubernetes.config.new_client_from_config(str(api.kubeconfig)) as client, \
            LocalMesh(tmp / "one") as one, LocalMesh(tmp / "two") as two:
        core = kubernetes.client.CoreV1Api(client)
        for name in ("istio-system", "shop"):
            core.create_namespace({"metadata": {"name": name}})
        admission = kubernetes.client.AdmissionregistrationV1Api(client)
        mutating, validating = webhook_configurations(base64.b64encode(b"stale").decode())
        admission.create_mutating_webhook_configuration(mutating)
        admission.create_validating_webhook_configuration(validating)
        one.start_discovery(kubeconfig=api.kubeconfig)
        two.start_discovery(kubeconfig=api.kubeconfig)
        yield Cluster(api, client, (one, two))


def sign(mesh: LocalMesh, token: str, uri: str = REVIEWS) -> list[str]:
    csr, _ = make_csr("ec", uris=[uri])
    return create_certificate(mesh.secure_address, mesh.root_cert.read_bytes(), csr,
                              token=token)


def refusal(mesh: LocalMesh, token: str, uri: str = REVIEWS) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        sign(mesh, token, uri)
    error: Any = info.value
    return error.code(), error.details() or ""


def test_both_replicas_sign_with_the_root_in_istio_ca_secret(cluster: Cluster):
    secret = cluster.core.read_namespaced_secret("istio-ca-secret", "istio-system")
    root = base64.b64decode(secret.data["ca-cert.pem"]).decode()
    assert [mesh.root_cert.read_text() for mesh in cluster.meshes] == [root, root]
    assert cluster.root_configmap("shop") == root
    assert cluster.root_configmap("default") == root


def test_a_projected_token_gets_a_certificate_for_its_own_service_account(cluster: Cluster):
    token = cluster.api.add_token(service_account("shop", "reviews", pod="reviews-v1-0"))
    root = cluster.root_configmap("shop")
    for mesh in cluster.meshes:
        leaf = verify_chain(sign(mesh, token), root)
        assert uri_sans(leaf) == [REVIEWS]


def test_a_token_is_refused_another_service_accounts_certificate(cluster: Cluster):
    token = cluster.api.add_token(service_account("shop", "reviews"))
    code, message = refusal(cluster.meshes[0], token, RATINGS)
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert f"caller is authenticated as {REVIEWS}" in message


@pytest.mark.parametrize(("audiences", "reason"), [
    (None, "did not authenticate the token: invalid bearer token"),
    (("https://kubernetes.default.svc.cluster.local",),
     "is invalid for the target audiences ['istio-ca']"),
])
def test_bad_tokens_are_refused_saying_why(cluster: Cluster, audiences, reason):
    token = ("not-a-token" if audiences is None else
             cluster.api.add_token(service_account("shop", "reviews", audiences=audiences)))
    code, message = refusal(cluster.meshes[1], token)
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert reason in message


def test_the_webhooks_ca_bundle_is_patched_to_the_root(cluster: Cluster):
    admission = kubernetes.client.AdmissionregistrationV1Api(cluster.client)
    configuration = admission.read_mutating_webhook_configuration("istio-sidecar-injector")
    bundle = configuration.webhooks[0].client_config.ca_bundle
    bundle = bundle if isinstance(bundle, str) else bundle.decode()
    assert base64.b64decode(bundle).decode() == cluster.meshes[0].root_cert.read_text()


def ads_cds(mesh: LocalMesh, token: str, namespace: str) -> discovery_pb2.DiscoveryResponse:
    """One CDS request on 15012 as a proxy in ``namespace``, with a pod token."""
    async def call() -> discovery_pb2.DiscoveryResponse:
        creds = grpc.ssl_channel_credentials(mesh.root_cert.read_bytes())
        async with grpc.aio.secure_channel(mesh.secure_address, creds, options=[
                ("grpc.ssl_target_name_override", "istiod.istio-system.svc")]) as channel:
            stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel) \
                .StreamAggregatedResources(metadata=[("authorization", f"Bearer {token}")],
                                           timeout=10)
            node = f"sidecar~127.0.0.1~reviews-v1-0.{namespace}~{namespace}.svc.cluster.local"
            await stream.write(discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id=node),
                                                              type_url=types.CLUSTER))
            response = await stream.read()
            stream.cancel()
            assert isinstance(response, discovery_pb2.DiscoveryResponse), response
            return response

    return asyncio.run(call())


def test_ads_on_15012_takes_a_reviewed_token_for_its_own_namespace_only(cluster: Cluster):
    token = cluster.api.add_token(service_account("shop", "reviews"))
    assert ads_cds(cluster.meshes[0], token, "shop").type_url == types.CLUSTER
    with pytest.raises(grpc.RpcError) as info:
        ads_cds(cluster.meshes[0], token, "default")
    error: Any = info.value
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


def test_a_node_agent_gets_the_identities_on_its_node_only(cluster: Cluster):
    """ztunnel's token, bound to its pod (TokenReview ``extra``), and that pod's
    ``spec.nodeName``, read from the cluster, decide which identities it may ask for."""
    for name, namespace, account, node in [("ztunnel-a", "istio-system", "ztunnel", "node-a"),
                                           ("reviews-0", "shop", "reviews", "node-a"),
                                           ("ratings-0", "shop", "ratings", "node-b")]:
        cluster.core.create_namespaced_pod(namespace, {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"nodeName": node, "serviceAccountName": account,
                     "containers": [{"name": "c", "image": "x"}]}})
    uid = cluster.core.read_namespaced_pod("ztunnel-a", "istio-system").metadata.uid
    token = cluster.api.add_token(service_account("istio-system", "ztunnel", pod="ztunnel-a",
                                                  pod_uid=uid))
    root = cluster.root_configmap("shop")
    csr, _ = make_csr("ec", uris=[REVIEWS])
    for mesh in cluster.meshes:
        deadline = time.monotonic() + 10
        while True:  # until discovery's watch has the pods
            try:
                chain = create_certificate(mesh.secure_address, mesh.root_cert.read_bytes(),
                                           csr, token=token, impersonate=REVIEWS)
                break
            except grpc.RpcError as exc:
                if "not known to discovery" not in (exc.details() or "") or \
                        time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert uri_sans(verify_chain(chain, root)) == [REVIEWS]
        with pytest.raises(grpc.RpcError) as info:
            create_certificate(mesh.secure_address, mesh.root_cert.read_bytes(),
                               make_csr("ec", uris=[RATINGS])[0], token=token,
                               impersonate=RATINGS)
        error: Any = info.value
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "runs on node 'node-a'" in error.details()
