"""``pilotfish discovery --webhook-address``: the injection and validation webhooks as the
API server calls them (the test kit's fake one, over TLS checked against the CA bundle the
webhook configurations carry), driven through the official client as a user would."""

from __future__ import annotations

import base64
import io
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import kubernetes
import pytest
from kubernetes.client import ApiException

from pilotfish.cli import validate as validate_command
from pilotfish.core import http_client
from pilotfish.discovery.inject.policy import webhook_configurations
from pilotfish.testing.kube import FakeKubeApi, running
from pilotfish.testing.kube.crds import crd
from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import free_port

BAD_ROUTE = {
    "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
    "metadata": {"name": "reviews", "namespace": "shop"},
    "spec": {"hosts": ["reviews"], "http": [{
        "route": [{"destination": {"host": "reviews"}}],
        "redirect": {"uri": "/elsewhere"}}]},
}


@attrs.define
class Cluster:
    api: FakeKubeApi
    core: kubernetes.client.CoreV1Api
    custom: kubernetes.client.CustomObjectsApi
    webhook_port: int
    ca_pem: bytes


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    port = free_port()
    with running(tmp_path / "api") as api, \
            kubernetes.config.new_client_from_config(str(api.kubeconfig)) as client, \
            LocalMesh(tmp_path / "mesh") as mesh:
        kubernetes.client.ApiextensionsV1Api(client).create_custom_resource_definition(
            crd("networking.istio.io", "VirtualService", ("v1", "v1beta1")))
        core = kubernetes.client.CoreV1Api(client)
        core.create_namespace({"metadata": {"name": "shop",
                                            "labels": {"istio-injection": "enabled"}}})
        core.create_namespace({"metadata": {"name": "plain"}})
        # An OpenShift project: its pods may run only as users of its range.
        core.create_namespace({"metadata": {
            "name": "project", "labels": {"istio-injection": "enabled"},
            "annotations": {"openshift.io/sa.scc.uid-range": "1000620000/10000",
                            "openshift.io/sa.scc.supplemental-groups": "1000620000/10000"}}})
        # Discovery's own namespace, where its CA keeps the root (istio-ca-secret).
        core.create_namespace({"metadata": {"name": "istio-system"}})
        # As on OpenShift: pods of namespaces without SCC ranges are injected as anywhere.
        mesh.start_discovery(kubeconfig=api.kubeconfig,
                             mesh_config="injection: {global: {platform: openshift}}\n",
                             extra=["--webhook-address", f"127.0.0.1:{port}"])
        api.set_service_address("istio-system", "istiod", f"127.0.0.1:{port}")
        ca_pem = mesh.root_cert.read_bytes()
        admission = kubernetes.client.AdmissionregistrationV1Api(client)
        mutating, validating = webhook_configurations(base64.b64encode(ca_pem).decode())
        admission.create_mutating_webhook_configuration(mutating)
        admission.create_validating_webhook_configuration(validating)
        yield Cluster(api, core, kubernetes.client.CustomObjectsApi(client), port, ca_pem)


def replica_pod(namespace: str) -> dict[str, Any]:
    """A pod as a Deployment's ReplicaSet creates it."""
    return {"metadata": {"generateName": "web-7f9c8-", "namespace": namespace,
                         "labels": {"app": "web", "pod-template-hash": "7f9c8"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": "web-7f9c8", "uid": "u-1",
                                              "controller": True}]},
            "spec": {"containers": [{"name": "web", "image": "example/web:1",
                                     "ports": [{"name": "http", "containerPort": 8080}],
                                     "readinessProbe": {"httpGet": {"path": "/ready",
                                                                    "port": 8080}}}]}}


def test_a_deployments_pod_in_a_labelled_namespace_comes_back_injected(cluster: Cluster):
    created = cluster.core.create_namespaced_pod("shop", replica_pod("shop"))
    pod = kubernetes.client.ApiClient().sanitize_for_serialization(created)
    spec, metadata = pod["spec"], pod["metadata"]
    assert [c["name"] for c in spec["initContainers"]] == ["istio-init", "istio-proxy"]
    proxy = spec["initContainers"][1]
    assert proxy["restartPolicy"] == "Always"
    assert proxy["args"][:5] == ["--log-level", "info", "agent", "--type", "sidecar"]
    assert spec["initContainers"][0]["args"][2] == "iptables"
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["ISTIO_META_OWNER"] == \
        "kubernetes://apis/apps/v1/namespaces/shop/deployments/web"
    assert json.loads(env["ISTIO_KUBE_APP_PROBERS"]) == {
        "/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": 8080}}}
    assert spec["containers"][0]["readinessProbe"]["httpGet"] == {
        "path": "/app-health/web/readyz", "port": 15020}
    token = next(v for v in spec["volumes"] if v["name"] == "istio-token")
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "istio-ca"
    root = next(v for v in spec["volumes"] if v["name"] == "istiod-ca-cert")
    assert root["configMap"]["name"] == "istio-ca-root-cert"
    assert metadata["labels"]["security.istio.io/tlsMode"] == "istio"
    assert metadata["labels"]["service.istio.io/canonical-name"] == "web"
    assert json.loads(metadata["annotations"]["sidecar.istio.io/status"])["initContainers"] \
        == ["istio-init", "istio-proxy"]


def test_on_openshift_the_proxy_runs_as_the_last_uid_of_the_namespaces_range(
        cluster: Cluster):
    created = cluster.core.create_namespaced_pod("project", replica_pod("project"))
    init, proxy = created.spec.init_containers
    assert (proxy.security_context.run_as_user, proxy.security_context.run_as_group) == \
        (1000629999, 1000629999)
    assert init.args[init.args.index("-u") + 1] == "1000629999"  # capture exempts it
    [shop] = cluster.core.create_namespaced_pod("shop", replica_pod("shop")) \
        .spec.init_containers[1:]
    assert shop.security_context.run_as_user == 1337


def test_a_pod_in_an_unlabelled_namespace_is_not_injected(cluster: Cluster):
    created = cluster.core.create_namespaced_pod("plain", replica_pod("plain"))
    assert [c.name for c in created.spec.containers] == ["web"]
    assert not created.spec.init_containers
    assert "sidecar.istio.io/status" not in (created.metadata.annotations or {})


def test_a_pod_that_says_no_is_not_injected_in_a_labelled_namespace(cluster: Cluster):
    pod = replica_pod("shop")
    pod["metadata"]["labels"]["sidecar.istio.io/inject"] = "false"
    created = cluster.core.create_namespaced_pod("shop", pod)
    assert not created.spec.init_containers


def test_an_invalid_virtual_service_is_refused_with_pilotfish_validates_message(
        cluster: Cluster, tmp_path: Path):
    path = tmp_path / "reviews.yaml"
    path.write_text(json.dumps(BAD_ROUTE))
    out = io.StringIO()
    assert validate_command.main(attrs.make_class("Args", ["paths", "output"])(
        [str(path)], "text"), out, io.StringIO()) == 1
    [line] = out.getvalue().splitlines()
    expected = line.split(": ", 1)[1]  # without FILE:LINE
    with pytest.raises(ApiException) as refused:
        cluster.custom.create_namespaced_custom_object(
            "networking.istio.io", "v1", "shop", "virtualservices", BAD_ROUTE)
    message = json.loads(refused.value.body)["message"]
    assert message == ('admission webhook "rev.validation.istio.io" denied the request: '
                       f"configuration is invalid: {expected}")
    good = {**BAD_ROUTE, "spec": {"hosts": ["reviews"], "http": [
        {"route": [{"destination": {"host": "reviews"}}]}]}}
    cluster.custom.create_namespaced_custom_object(
        "networking.istio.io", "v1", "shop", "virtualservices", good)


async def _post(port: int, ca_pem: bytes, path: str, body: bytes,
                content_type: str = "application/json") -> http_client.HttpReply:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    return await http_client.request(
        f"https://127.0.0.1:{port}{path}", "POST", body=body, ssl_context=context,
        server_name="istiod.istio-system.svc", headers=[("Content-Type", content_type)])


def test_a_malformed_review_is_a_400_naming_the_field_and_the_server_goes_on(
        cluster: Cluster):
    import anyio

    def post(path: str, body: bytes, content_type: str = "application/json"
             ) -> http_client.HttpReply:
        return anyio.run(_post, cluster.webhook_port, cluster.ca_pem, path, body,
                         content_type)

    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"kind": {"kind": "Pod"}, "operation": "CREATE", "object": {}}}
    reply = post("/inject", json.dumps(review).encode())
    assert (reply.status, reply.body) == (400, b"bad AdmissionReview: request.uid: required "
                                               b"(a non-empty string)\n")
    reply = post("/validate", b"{not json")
    assert reply.status == 400 and reply.body.startswith(b"bad AdmissionReview: request body: "
                                                         b"not JSON")
    review["request"] = {**review["request"], "uid": "1", "object": ["a list"]}
    reply = post("/inject", json.dumps(review).encode())
    assert reply.body == b"bad AdmissionReview: request.object: expected an object, got list\n"
    assert post("/inject", b"{}", "text/plain").status == 415
    # and it still injects
    created = cluster.core.create_namespaced_pod("shop", replica_pod("shop"))
    assert [c.name for c in created.spec.init_containers] == ["istio-init", "istio-proxy"]
