"""``pilotfish install`` and ``uninstall`` against the fake API server, through the real
client: server-side apply (field manager ``pilotfish``), CRDs Established first, the wait for
discovery's Deployment (marked available here through its status subresource, as the
Deployment controller would) and its timeout, and what uninstall leaves."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
from kubernetes.client import ApiException

from pilotfish.cli import install, manifests
from pilotfish.cli.main import main
from pilotfish.testing.kube import FakeKubeApi, running

NO_CRDS = ["--set", "components.crds.enabled=false"]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeKubeApi]:
    with running(tmp_path) as server:
        yield server


def client(api: FakeKubeApi) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(str(api.kubeconfig))


def mark_available(api: FakeKubeApi, stop: threading.Event) -> None:
    """What the Deployment controller and the kubelet would do: once the Deployment exists,
    its one replica is up."""
    apps = kubernetes.client.AppsV1Api(client(api))
    while not stop.is_set():
        try:
            found = apps.read_namespaced_deployment("istiod", "istio-system")
        except ApiException:
            time.sleep(0.05)
            continue
        apps.patch_namespaced_deployment_status("istiod", "istio-system", {"status": {
            "observedGeneration": found.metadata.generation, "replicas": 1,
            "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}})
        return


def test_install_applies_everything_and_waits_for_discovery(api: FakeKubeApi, capsys):
    stop = threading.Event()
    marker = threading.Thread(target=mark_available, args=(api, stop))
    marker.start()
    try:
        assert main(["install", "--kubeconfig", str(api.kubeconfig), "--timeout", "30"]) == 0
    finally:
        stop.set()
        marker.join()
    out = capsys.readouterr().out
    assert "CustomResourceDefinitions Established" in out
    assert "✔ Deployment istio-system/istiod ready" in out
    assert out.rstrip().endswith("✔ installed")
    api_client = client(api)
    crd = kubernetes.client.ApiextensionsV1Api(api_client).read_custom_resource_definition(
        "virtualservices.networking.istio.io")
    assert crd.metadata.managed_fields[0].manager == "pilotfish"
    assert crd.metadata.managed_fields[0].operation == "Apply"
    core = kubernetes.client.CoreV1Api(api_client)
    service = core.read_namespaced_service("istiod", "istio-system")
    assert {p.name for p in service.spec.ports} >= {"grpc-xds", "https-webhook"}
    webhook = kubernetes.client.AdmissionregistrationV1Api(
        api_client).read_mutating_webhook_configuration("istio-sidecar-injector")
    assert webhook.webhooks[0].client_config.service.port == 443
    # the CRDs serve their kinds now
    custom = kubernetes.client.CustomObjectsApi(api_client)
    assert custom.list_namespaced_custom_object(
        "networking.istio.io", "v1", "default", "virtualservices")["items"] == []


def test_reinstall_is_an_upgrade(api: FakeKubeApi, capsys):
    args = ["install", "--kubeconfig", str(api.kubeconfig), "--no-wait", *NO_CRDS]
    assert main(args) == 0
    assert main([*args, "--set", "components.discovery.replicas=3", "--set",
                 "components.cni.enabled=true"]) == 0
    apps = kubernetes.client.AppsV1Api(client(api))
    deployment = apps.read_namespaced_deployment("istiod", "istio-system")
    assert (deployment.spec.replicas, deployment.metadata.generation) == (3, 2)
    assert apps.read_namespaced_daemon_set("istio-cni-node", "istio-system").metadata.name


def test_a_deployment_never_available_times_out_naming_it(api: FakeKubeApi):
    objects = manifests.generate(manifests.values(sets=["components.crds.enabled=false"]))
    out = io.StringIO()
    kube = install.connect(_Args(api.kubeconfig))
    try:
        with pytest.raises(install.CommandError) as caught:
            install.install(kube, objects, timeout=0.3, wait=True, out=out, poll=0.05)
    finally:
        kube.close()
    assert str(caught.value) == ("not ready after 0.3s: Deployment istio-system/istiod "
                                 "(its controller has not seen generation 1 yet)")
    assert "  Deployment istio-system/istiod: its controller" in out.getvalue()


def test_progress_names_replicas_until_available():
    deployment = {"metadata": {"generation": 2}, "spec": {"replicas": 2},
                  "status": {"observedGeneration": 2, "updatedReplicas": 2,
                             "availableReplicas": 1}}
    assert install.deployment_waiting(deployment) == "1 of 2 replicas available, 2 updated"
    deployment["status"]["availableReplicas"] = 2
    assert install.deployment_waiting(deployment) is None
    daemonset = {"metadata": {"generation": 1},
                 "status": {"observedGeneration": 1, "desiredNumberScheduled": 3,
                            "numberAvailable": 3, "updatedNumberScheduled": 2}}
    assert install.daemonset_waiting(daemonset) == "3 of 3 nodes available, 2 updated"


def test_uninstall_keeps_namespace_and_crds_unless_purged(api: FakeKubeApi, capsys):
    kubeconfig = str(api.kubeconfig)
    assert main(["install", "--kubeconfig", kubeconfig, "--no-wait"]) == 0
    assert main(["uninstall", "--kubeconfig", kubeconfig]) == 0
    api_client = client(api)
    core = kubernetes.client.CoreV1Api(api_client)
    assert core.read_namespace("istio-system").metadata.name == "istio-system"
    assert core.list_namespaced_service("istio-system").items == []
    assert kubernetes.client.AppsV1Api(api_client).list_namespaced_deployment(
        "istio-system").items == []
    extensions = kubernetes.client.ApiextensionsV1Api(api_client)
    assert len(extensions.list_custom_resource_definition().items) == len(manifests.crds())
    assert main(["uninstall", "--kubeconfig", kubeconfig, "--purge"]) == 0
    assert extensions.list_custom_resource_definition().items == []
    assert "CustomResourceDefinition virtualservices.networking.istio.io deleted" in \
        capsys.readouterr().out


def test_a_missing_kubeconfig_is_named(tmp_path: Path, capsys):
    assert main(["install", "--kubeconfig", str(tmp_path / "nope")]) == 2
    assert f"--kubeconfig {tmp_path / 'nope'}: no such file" in capsys.readouterr().err


class _Args:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig, self.context = str(kubeconfig), None
